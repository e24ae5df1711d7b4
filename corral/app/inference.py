"""Handlers for the routes that go to one node chosen by model: generate, chat, embeddings, show and
their OpenAI counterparts. They read only what routing needs from the body and forward the bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from corral.adapters.audit import prompt_digest
from corral.app.admission import OutsideKeyGroup
from corral.app.attempts import Forwarder
from corral.app.cache import CacheControl
from corral.app.context import ApiFamily, RequestRecord
from corral.app.downstream import Downstream
from corral.app.embed_cache import EmbedCache
from corral.app.fleet import Fleet
from corral.app.headers import Outbound, outbound
from corral.app.naming import ModelTargets
from corral.app.response_cache import ResponseCache
from corral.app.scopes import check_model
from corral.domain.errors import Forbidden, InvalidRequest, NoSuchModel, NoSuchNode
from corral.domain.fleet import NodeKind, RouteRequest
from corral.domain.keys import model_allowed
from corral.domain.names import normalize
from corral.domain.num_ctx import NumCtxPolicy, rewrite
from corral.domain.prefix_index import PrefixIndex, slack_s
from corral.net.response import Request, Response
from corral.protocol.body import encode, read_body
from corral.protocol.multipart import form_field
from corral.protocol.prefix import ROUTES as PREFIX_ROUTES
from corral.protocol.prefix import Prefix, prefix_hashes
from corral.protocol.prompts import BYTES_PER_TOKEN, expected_output_tokens, prompt_text
from corral.protocol.validation import Caps, validate

if TYPE_CHECKING:
    from corral.app.fanout_load import LoadFanout

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
# Native routes whose `options` reach the runner; Ollama's /v1 routes carry no num_ctx (openai/openai.go).
_OPTIONS_ROUTES = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})
_UNKNOWN_QUOTED = frozenset({"/api/embed", "/api/embeddings"})
EMBED_ROUTES = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings"})
# Routes an OpenAI-type node can serve: its own /v1 routes, and native chat/generate by translation.
OPENAI_NODE_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate"}
)


def options_key(doc: dict[str, Any]) -> str:
    options = doc.get("options")
    if not isinstance(options, dict):
        return ""
    parts = []
    for k in LOAD_OPTIONS:
        if k in options:
            value = options[k]
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 4096.0 is 4096 to Ollama (Options.FromMap): the same runner
            parts.append(f"{k}={value}")
    return ",".join(parts)


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
        responses: ResponseCache | None = None,
        embeddings: EmbedCache | None = None,
        targets: ModelTargets | None = None,
        num_ctx: dict[str, NumCtxPolicy] | None = None,
        observe: Callable[[str], None] | None = None,
        prefixes: PrefixIndex | None = None,
        prompt_eval_rate: float = 2000.0,
    ) -> None:
        # routing.prefix_affinity: who served each conversation prefix (docs/routing.md); None when off
        self.prefixes = prefixes
        self.prompt_eval_rate = prompt_eval_rate
        self.observe = observe  # every routed request's model, for the residency controller
        # models.<name>.num_ctx, by normalised name; only native routes carry options (docs/routing.md)
        self.num_ctx = {normalize(name): policy for name, policy in (num_ctx or {}).items()}
        self.responses = responses
        self.embeddings = embeddings
        self.targets = targets or ModelTargets(fleet.catalog, {})
        self.fingerprint_key = fingerprint_key
        self.caps = caps or Caps()
        self.allowed_models = allowed_models
        self.audit_prompts = audit_prompts
        self.include_content = include_content
        self.fleet = fleet
        self.forwarder = forwarder
        self.affinity_header = affinity_header.lower().encode()
        self.fleet_load: LoadFanout | None = None  # loads and unloads on several nodes (app/fanout_load.py)

    async def __call__(self, request: Request, response: Response, record: RequestRecord) -> None:
        route_name = record.route
        canonical: bytes | None = None
        rewritten: bytes | None = None
        if route_name == "/v1/audio/transcriptions":
            # A file upload: only the `model` form field is read, the rest is the client's bytes.
            content_type = request.header(b"content-type") or b""
            doc: dict[str, Any] = {"model": form_field(request.body, content_type, b"model")}
        else:
            body = read_body(request.body, route_name)
            doc = body.doc
            if not body.exact:
                # Keys in other cases or repeated: an OpenAI-type node (case-sensitive) gets the body as
                # Ollama reads it, so every node acts on what was checked here.
                canonical = encode(doc)
        model = doc.get("model")
        if not model and route_name == "/api/show":
            model = doc.get("name")  # the legacy field (api.ShowRequest)
        if not isinstance(model, str) or not model.strip():
            status, message = _MISSING.get(route_name, (400, "model is required"))
            if status == 404:
                raise NoSuchModel(message)
            raise InvalidRequest(message, param="model")
        record.model = model if len(model) <= MODEL_LOG_CHARS else model[:MODEL_LOG_CHARS] + "..."
        validate(route_name, doc, self.caps)
        # Allow-lists apply to the model the name resolves to (an alias grants nothing by itself).
        key = self.targets.resolve(model)
        if not self._gateway_allows(key):
            raise Forbidden(f"model '{model}' is not served by this gateway", param="model")
        check_model(record, key)
        fleet_load = self.fleet_load
        if (
            fleet_load is not None
            and fleet_load.wants(request, route_name, doc)
            and await fleet_load(request, response, record, doc, key)
        ):
            return
        if self.num_ctx and route_name in _OPTIONS_ROUTES:
            policy = self.num_ctx.get(normalize(key))
            options = rewrite(policy, doc.get("options")) if policy is not None else None
            if options is not None:
                # What the client asked for is changed here: every node gets the re-encoded body.
                doc = {**doc, "options": options}
                rewritten = encode(doc)
        prompt = prompt_text(doc)  # once: the audit fingerprint and the token estimate both read it
        if self.audit_prompts:
            record.prompt_digest = prompt_digest(prompt, self.fingerprint_key)
            if self.include_content:
                record.prompt_text = prompt
        default_stream = record.family is ApiFamily.OLLAMA and route_name in ("/api/generate", "/api/chat")
        stream = doc.get("stream", default_stream)
        record.stream = stream is True
        affinity = request.header(self.affinity_header)
        user = doc.get("user")
        record.est_prompt_tokens = max(1, len(prompt) // BYTES_PER_TOKEN)
        principal = record.principal
        load_options = options_key(doc)
        session = affinity.decode("latin-1") if affinity else (user if isinstance(user, str) else None)
        prefix = None
        prefer, slack = None, 0.0
        if self.prefixes is not None and route_name in PREFIX_ROUTES:
            prefix = prefix_hashes(route_name, doc, key, load_options)
            if prefix is not None and session is None:  # explicit affinity wins
                found = self.prefixes.find(prefix.hashes, prefix.tokens)
                if found is not None:
                    prefer, slack = found.node, slack_s(found.cached_tokens, self.prompt_eval_rate)
        route, fallbacks = self.targets.chain(
            RouteRequest(
                model=key,
                options_key=load_options,
                affinity=session,
                exclude=self._unsuitable(route_name) | self._not_named(request),
                key_nodes=principal.nodes if principal is not None else None,
                est_tokens=record.est_prompt_tokens + expected_output_tokens(doc, route_name),
                est_prompt_tokens=record.est_prompt_tokens,
                shed_after_s=self.targets.shed_after_s,
                prefer=prefer,
                prefer_slack_s=slack,
            ),
            lambda name: self._gateway_allows(name) and (principal is None or principal.allows_model(name)),
        )
        # A multipart body cannot be rewritten: such a request goes to the node under its own name.
        requested = None if route_name == "/v1/audio/transcriptions" else model
        if self.observe is not None:
            self.observe(route.model)
        try:
            out = outbound(request, record.request_id, canonical)
            if rewritten is not None:
                out = replace(out, body=rewritten, canonical=rewritten)
            if (self.responses is None and self.embeddings is None) or not await self._cached(
                request, response, record, route, out, doc, fallbacks, requested
            ):
                await self.forwarder.forward(record, route, out, response, doc, fallbacks, requested)
            if prefix is not None:
                self._served(prefix, record)
        except OutsideKeyGroup:
            raise  # its message names the key's node group
        except NoSuchModel as exc:
            if route_name in _UNKNOWN_QUOTED:
                exc.message = f'model "{model}" not found, try pulling it first'
            else:
                exc.message = f"model '{model}' not found"
            raise

    async def _cached(
        self,
        request: Request,
        response: Response,
        record: RequestRecord,
        route: RouteRequest,
        out: Outbound,
        doc: dict[str, Any],
        fallbacks: list[RouteRequest],
        requested: str | None,
    ) -> bool:
        """Answer through a cache (docs/cache.md); False when no cache applies to this request."""
        control = CacheControl(request)
        name = record.route
        if name in EMBED_ROUTES:
            if self.embeddings is None:
                return False

            async def forward(sent: Outbound, into: Downstream) -> None:
                await self.forwarder.forward(record, route, sent, into, doc, fallbacks, requested)

            return await self.embeddings.serve(name, route.model, doc, out, control, response, record, forward)
        if self.responses is None:
            return False
        key = self.responses.key(record, name, route.model, doc)
        if key is None:
            return False
        if await self.responses.answer(key, control, response, record):
            return True
        tee = self.responses.recorder(response, record)
        await self.forwarder.forward(record, route, out, tee, doc, fallbacks, requested)
        self.responses.keep(key, control, tee, record)
        return True

    def _served(self, prefix: Prefix, record: RequestRecord) -> None:
        """A node answered the whole prompt: its slot holds the prefix now (not after an error, nor
        when a fallback model served, whose runner holds another cache)."""
        node = record.node
        if self.prefixes is None or node is None or not 200 <= record.status < 400 or record.fallback_from:
            return
        if prefix.first is not None:
            self.prefixes.record(prefix.first, node)  # other conversations of the application share it
        if prefix.full is not None:
            self.prefixes.record(prefix.full, node)  # this conversation's next turn

    def _gateway_allows(self, model: str) -> bool:
        return self.allowed_models is None or model_allowed(self.allowed_models, model)

    def _not_named(self, request: Request) -> frozenset[str]:
        """With X-Corral-Node the request goes to that node or to none (`corral backup` reads each node's
        Modelfiles this way); no retry elsewhere, since every other node is excluded."""
        raw = request.header(b"x-corral-node")
        if not raw:
            return frozenset()
        name = raw.decode("latin-1").strip()
        if self.fleet.get(name) is None:
            raise NoSuchNode(f"no node named '{name}' (X-Corral-Node); nodes: {', '.join(self.fleet.names())}")
        return frozenset(n.name for n in self.fleet if n.name != name)

    def _unsuitable(self, route_name: str) -> frozenset[str]:
        if route_name in OPENAI_NODE_ROUTES:
            return frozenset()
        return frozenset(n.name for n in self.fleet if n.kind is NodeKind.OPENAI)
