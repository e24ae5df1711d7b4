"""What one request leaves behind: filled in along the pipeline, read by the observers at the end."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from corral.domain.errors import ErrorKind
from corral.domain.keys import Principal

Headers = list[tuple[bytes, bytes]]


class ApiFamily(StrEnum):
    OLLAMA = "ollama"  # native /api/* and the other non-/v1 routes: errors are {"error": "..."}
    OPENAI = "openai"  # /v1/*: errors are the OpenAI error object
    ANTHROPIC = "anthropic"  # /v1/messages: errors are Anthropic's {"type": "error", "error": {...}}


class AttemptTrace(Protocol):
    """The trace span of one try on one node."""

    def end(self, status: int | None, error: str | None) -> None: ...


class RequestTrace(Protocol):
    """The trace span of one request (the tracing adapter implements it)."""

    def attempt(self, node: str, attempt: int) -> tuple[AttemptTrace, Headers]:
        """A child span for a try on `node`, and the trace-context headers to send with it."""
        ...

    def end(self, record: RequestRecord) -> None: ...


class RequestRecord:
    """One request's facts; safe to log (no prompt text, no key)."""

    __slots__ = (
        "attempts",
        "cache",
        "client_ip",
        "completion_tokens",
        "error",
        "error_kind",
        "est_prompt_tokens",
        "fallback_from",
        "family",
        "finished",
        "key_name",
        "limit_headers",
        "load_s",
        "method",
        "model",
        "node",
        "path",
        "principal",
        "priority",
        "prompt_digest",
        "prompt_text",
        "prompt_tokens",
        "queued_s",
        "request_id",
        "route",
        "served_model",
        "span",
        "started",
        "status",
        "stream",
        "tokens_counted",
        "ttft",
    )

    def __init__(self, request_id: str, method: str, path: str, client_ip: str, started: float) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = "other"  # a closed set: the route template, never the raw path
        self.family = ApiFamily.OLLAMA
        self.client_ip = client_ip
        self.started = started  # time.perf_counter() seconds (uvloop's loop.time() ticks in ms)
        self.finished = 0.0
        self.status = 0
        self.model: str | None = None
        self.node: str | None = None
        self.served_model: str | None = None  # the fleet model that answered (an alias or fallback resolved)
        self.fallback_from: str | None = None  # the model asked for, when a fallback served instead
        self.stream = False
        self.attempts = 0
        self.cache: str | None = None  # hit, miss, partial or bypass when a cache was consulted
        self.ttft: float | None = None
        self.span: RequestTrace | None = None  # the request's trace span, when tracing is on
        self.key_name: str | None = None  # the API key's name, once authenticated
        self.limit_headers: list[tuple[bytes, bytes]] = []  # RateLimit-* for the response
        self.priority = 0  # the key's priority class in the admission queue
        self.principal: Principal | None = None  # once authenticated
        self.prompt_digest: tuple[str, int] | None = None  # (SHA-256, length) of the prompt, for the audit log
        self.prompt_text: str | None = None  # only with audit.include_content
        self.load_s: float | None = None
        self.queued_s = 0.0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.est_prompt_tokens = 0  # the prompt's estimated tokens, when the node gives no count
        self.tokens_counted = False  # completion tokens counted from what was relayed (no node count)
        self.error_kind: ErrorKind | None = None
        self.error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started


Observer = Callable[[RequestRecord], None]
