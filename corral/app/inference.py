"""Handlers for the routes that go to one node chosen by model: generate, chat, embeddings, show and
their OpenAI counterparts. They read only what routing needs from the body and forward the bytes."""

from __future__ import annotations

from typing import Any

import orjson

from corral.adapters.audit import prompt_digest
from corral.app.attempts import Forwarder
from corral.app.context import ApiFamily, RequestRecord
from corral.app.fleet import Fleet
from corral.app.headers import outbound
from corral.app.scopes import check_model
from corral.domain.errors import Forbidden, InvalidRequest, NoSuchModel
from corral.domain.fleet import NodeKind, RouteRequest
from corral.domain.keys import model_allowed
from corral.domain.names import normalize
from corral.net.response import Request, Response
from corral.protocol.multipart import form_field
from corral.protocol.validation import Caps, Invalid, validate

# Options that make Ollama load a separate runner (docs/ollama-behaviour.md §2): a change means a reload.
LOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")

# A model name is echoed into logs and audit records: a hostile 1 MB name must not be.
MODEL_LOG_CHARS = 200

# How each route reports a missing or unknown model, as Ollama does (docs/ollama-behaviour.md §3).
_MISSING = {
    "/api/generate": (404, "model '' not found"),
    "/api/chat": (400, "model is required"),
    "/api/show": (400, "model is required"),
    "/api/embed": (404, "model '' not found"),
    "/api/embeddings": (400, "model is required"),
}
_UNKNOWN_QUOTED = frozenset({"/api/embed", "/api/embeddings"})
# Routes an OpenAI-type node can serve: its own /v1 routes, and native chat/generate by translation.
OPENAI_NODE_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate"}
)


def parse_body(body: bytes) -> dict[str, Any]:
    if not body or not body.strip():
        raise InvalidRequest("missing request body")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc.args[0]}") from exc
    if not isinstance(doc, dict):
        raise InvalidRequest("request body must be a JSON object")
    return doc


def options_key(doc: dict[str, Any]) -> str:
    options = doc.get("options")
    if not isinstance(options, dict):
        return ""
    parts = [f"{k}={options[k]}" for k in LOAD_OPTIONS if k in options]
    return ",".join(parts)


def prompt_text(doc: dict[str, Any]) -> str:
    """The prompt as the audit log fingerprints it: prompt, messages' contents or embedding input."""
    for key in ("prompt", "input"):
        value = doc.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
    messages = doc.get("messages")
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return ""


class InferenceHandlers:
    def __init__(
        self,
        fleet: Fleet,
        forwarder: Forwarder,
        affinity_header: str,
        audit_prompts: bool = False,
        include_content: bool = False,
        caps: Caps | None = None,
        allowed_models: tuple[str, ...] | None = None,
        fingerprint_key: bytes | None = None,
    ) -> None:
        self.fingerprint_key = fingerprint_key
        self.caps = caps or Caps()
        self.allowed_models = allowed_models
        self.audit_prompts = audit_prompts
        self.include_content = include_content
        self.fleet = fleet
        self.forwarder = forwarder
        self.affinity_header = affinity_header.lower().encode()

    async def __call__(self, request: Request, response: Response, record: RequestRecord) -> None:
        route_name = record.route
        if route_name == "/v1/audio/transcriptions":
            # A file upload: only the `model` form field is read, the rest is the client's bytes.
            content_type = request.header(b"content-type") or b""
            doc: dict[str, Any] = {"model": form_field(request.body, content_type, b"model")}
        else:
            doc = parse_body(request.body)
        model = doc.get("model")
        if model is None and route_name == "/api/show":
            model = doc.get("name")
        if not isinstance(model, str) or not model.strip():
            status, message = _MISSING.get(route_name, (400, "model is required"))
            if status == 404:
                raise NoSuchModel(message)
            raise InvalidRequest(message, param="model")
        record.model = model if len(model) <= MODEL_LOG_CHARS else model[:MODEL_LOG_CHARS] + "..."
        try:
            validate(route_name, doc, self.caps)
        except Invalid as exc:
            raise InvalidRequest(f"{exc.field}: {exc.reason}", param=exc.field) from None
        if self.allowed_models is not None and not model_allowed(self.allowed_models, model):
            raise Forbidden(f"model '{model}' is not served by this gateway", param="model")
        check_model(record, model)
        if self.audit_prompts:
            prompt = prompt_text(doc)
            record.prompt_digest = prompt_digest(prompt, self.fingerprint_key)
            if self.include_content:
                record.prompt_text = prompt
        default_stream = record.family is ApiFamily.OLLAMA and route_name in ("/api/generate", "/api/chat")
        stream = doc.get("stream", default_stream)
        record.stream = stream is True
        affinity = request.header(self.affinity_header)
        user = doc.get("user")
        route = RouteRequest(
            model=normalize(model),
            options_key=options_key(doc),
            affinity=affinity.decode("latin-1") if affinity else (user if isinstance(user, str) else None),
            exclude=self._unsuitable(route_name),
        )
        try:
            await self.forwarder.forward(record, route, outbound(request, record.request_id), response, doc)
        except NoSuchModel as exc:
            if route_name in _UNKNOWN_QUOTED:
                exc.message = f'model "{model}" not found, try pulling it first'
            else:
                exc.message = f"model '{model}' not found"
            raise

    def _unsuitable(self, route_name: str) -> frozenset[str]:
        if route_name in OPENAI_NODE_ROUTES:
            return frozenset()
        return frozenset(n.name for n in self.fleet if n.kind is NodeKind.OPENAI)
