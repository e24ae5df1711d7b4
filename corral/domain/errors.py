"""The closed set of gateway outcomes and the exceptions that carry them.

Each error knows its HTTP status; exactly one place (the error layer of the app) renders it, in the
shape of the route's API family. `kind` is safe as a log field and a metric label.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    NO_SUCH_MODEL = "no_such_model"
    NO_HEALTHY_NODE = "no_healthy_node"
    NO_SUCH_NODE = "no_such_node"
    NODE_REQUIRED = "node_required"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    INVALID_REQUEST = "invalid_request"
    BODY_TOO_LARGE = "body_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_STATUS = "upstream_status"
    UPSTREAM_MIDSTREAM = "upstream_midstream"
    UPSTREAM_PROTOCOL = "upstream_protocol"
    CLIENT_GONE = "client_gone"
    INTERNAL = "internal"


class GatewayError(Exception):
    """Base of every error the gateway answers itself. Subclasses fix `kind` and `status`."""

    kind: ErrorKind = ErrorKind.INTERNAL
    status: int = 500
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidRequest(GatewayError):
    kind, status = ErrorKind.INVALID_REQUEST, 400


class NodeRequired(GatewayError):
    kind, status = ErrorKind.NODE_REQUIRED, 400


class BodyTooLarge(GatewayError):
    kind, status = ErrorKind.BODY_TOO_LARGE, 413


class RequestTimeout(GatewayError):
    """The client stopped sending its request body."""

    kind, status = ErrorKind.REQUEST_TIMEOUT, 408


class Unauthenticated(GatewayError):
    kind, status = ErrorKind.UNAUTHENTICATED, 401


class Forbidden(GatewayError):
    kind, status = ErrorKind.FORBIDDEN, 403


class NoSuchModel(GatewayError):
    kind, status = ErrorKind.NO_SUCH_MODEL, 404


class NoSuchNode(GatewayError):
    kind, status = ErrorKind.NO_SUCH_NODE, 404


class NotFound(GatewayError):
    kind, status = ErrorKind.NOT_FOUND, 404


class MethodNotAllowed(GatewayError):
    kind, status = ErrorKind.METHOD_NOT_ALLOWED, 405


class RateLimited(GatewayError):
    kind, status = ErrorKind.RATE_LIMITED, 429


class NoHealthyNode(GatewayError):
    kind, status = ErrorKind.NO_HEALTHY_NODE, 503


class QueueFull(GatewayError):
    kind, status = ErrorKind.QUEUE_FULL, 503


class QueueTimeout(GatewayError):
    kind, status = ErrorKind.QUEUE_TIMEOUT, 503


class Overloaded(GatewayError):
    """Shed at once: routing estimated the request would wait longer than `queue.shed_after_s` for a
    node to start it."""

    kind, status = ErrorKind.OVERLOADED, 503


class UpstreamError(GatewayError):
    """A failure talking to a node. `retryable` says whether another node may be tried."""

    retryable = True


class UpstreamStatus(UpstreamError):
    """A node answered with an error status (502, 503) before any byte reached the client: another node
    may be tried, and if none can, the node's own answer is passed on (its status, body and type)."""

    kind = ErrorKind.UPSTREAM_STATUS

    def __init__(
        self, message: str, status: int, body: bytes, headers: list[tuple[bytes, bytes]], retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.headers = headers
        self.retryable = retryable


class UpstreamConnect(UpstreamError):
    kind, status = ErrorKind.UPSTREAM_CONNECT, 502


class UpstreamTimeout(UpstreamError):
    kind, status = ErrorKind.UPSTREAM_TIMEOUT, 504


class UpstreamAnswerTimeout(UpstreamTimeout):
    """The node accepted the request and did not answer in time: it may still be working on it, so the
    request is never replayed on another node."""

    retryable = False


class UpstreamProtocol(UpstreamError):
    kind, status = ErrorKind.UPSTREAM_PROTOCOL, 502


class UpstreamMidstream(UpstreamError):
    kind, status = ErrorKind.UPSTREAM_MIDSTREAM, 502
    retryable = False
