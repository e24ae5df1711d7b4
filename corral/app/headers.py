"""Header policy between client and node, and what is sent to a node (`Outbound`)."""

from __future__ import annotations

from dataclasses import dataclass

from corral.app.context import is_uuid
from corral.net.response import Headers, Request

# Never forwarded to a node: hop-by-hop headers, the client's credentials, browser origin, our own.
DROP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"authorization",
        b"x-api-key",
        b"proxy-authorization",
        b"cookie",
        b"origin",
        b"x-corral-node",
        b"x-request-id",
    }
)
DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"server",
        b"date",
        b"x-request-id",
        b"x-corral-node",
        b"x-corral-model",
        b"access-control-allow-origin",
        b"vary",
    }
)


# Built per request, never changed: not `frozen`, whose __init__ sets each field through
# object.__setattr__ (about three times the cost; docs/benchmarks.md §5).
@dataclass(slots=True)
class Outbound:
    """What to send to the chosen node."""

    method: str
    target: bytes  # path and query, as received (raw, not re-encoded)
    headers: Headers
    body: bytes
    canonical: bytes | None = None  # the body as Ollama reads it, when it differs in spelling (OpenAI nodes)


def forward_headers(request: Request, request_id: str) -> Headers:
    # Headers the client lists in `Connection:` are hop-by-hop by declaration (RFC 9110 §7.6.1): a client
    # could otherwise strip a header that a proxy in between adds.
    listed = request.connection_tokens
    if listed:
        out = [(k, v) for k, v in request.headers if k not in DROP_REQUEST and k not in listed]
    else:
        out = [(k, v) for k, v in request.headers if k not in DROP_REQUEST]
    out.append((b"x-request-id", request_id.encode()))
    return out


def openai_node_headers(headers: Headers) -> Headers:
    """OpenAI-compatible servers may insist that X-Request-ID be a UUID (llama-cpp-python does)."""
    return [(k, v) for k, v in headers if k != b"x-request-id" or is_uuid(v.decode("latin-1"))]


def outbound(request: Request, request_id: str, canonical: bytes | None = None) -> Outbound:
    """The client's request as it goes to a node: same method, raw target and body; filtered headers."""
    target = request.raw_path + (b"?" + request.query if request.query else b"")
    return Outbound(request.method, target, forward_headers(request, request_id), request.body, canonical)
