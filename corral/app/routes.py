"""The route table: every route Corral serves, declared once with the facts the guards read.

A new route is one line here plus its handler (bound by name in `app/build.py`). Auth, limits, the
body reader and the metrics presets all read these facts; nothing else keeps a list of routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.domain.record import ApiFamily


class Access(StrEnum):
    PUBLIC = "public"  # no key, ever (probes)
    METRICS = "metrics"  # no key when `auth.metrics: open`, else any valid key
    USER = "user"  # any valid key
    ADMIN = "admin"  # an admin key; never reachable from a browser origin without one


class Body(StrEnum):
    NONE = "none"  # the body, if any, is not read
    WHOLE = "whole"  # read whole, capped at server.max_body_bytes, before the handler runs
    STREAM = "stream"  # the handler streams it to a node at constant memory, any size


@dataclass(frozen=True, slots=True)
class RouteSpec:
    methods: tuple[str, ...]
    path: str  # the template: a closed set, safe as a log field and metric label
    handler: str  # the name build.py binds to a callable
    family: ApiFamily  # the shape of its errors: Ollama {"error"} or the OpenAI error object
    access: Access = Access.USER
    limited: bool = True  # request-rate limits apply
    tokens: bool = False  # token-per-minute limits and the per-key concurrency slot apply
    model: bool = False  # routed by the model its body names
    body: Body = Body.WHOLE

    @property
    def inference(self) -> bool:
        """Model-bearing routes that generate or embed: routed by model, token-limited."""
        return self.model and self.tokens


def route(
    methods: str,
    path: str,
    handler: str,
    *,
    access: Access = Access.USER,
    limited: bool = True,
    tokens: bool = False,
    model: bool = False,
    body: Body = Body.WHOLE,
    family: ApiFamily | None = None,
) -> RouteSpec:
    fam = family or (ApiFamily.OPENAI if path.startswith("/v1/") else ApiFamily.OLLAMA)
    return RouteSpec(tuple(methods.split(",")), path, handler, fam, access, limited, tokens, model, body)


def infer(path: str) -> RouteSpec:
    """A model-bearing POST that generates or embeds: routed by model, token-limited."""
    return route("POST", path, "inference", tokens=True, model=True)


def admin(methods: str, path: str, handler: str, body: Body = Body.WHOLE) -> RouteSpec:
    return route(methods, path, handler, access=Access.ADMIN, body=body, family=ApiFamily.OLLAMA)


def console(path: str, handler: str, access: Access = Access.PUBLIC) -> RouteSpec:
    """The web console: its files need no key, its API the caller's. Never rate-limited, so that a
    console left open does not spend the key's or the address's request budget on its polling."""
    methods = "GET,HEAD" if access is Access.PUBLIC else "GET"
    return route(methods, path, handler, access=access, limited=False, body=Body.NONE, family=ApiFamily.OLLAMA)


def probe(path: str, handler: str) -> RouteSpec:
    fam = ApiFamily.OLLAMA
    return route("GET,HEAD", path, handler, access=Access.PUBLIC, limited=False, body=Body.NONE, family=fam)


ROUTES: tuple[RouteSpec, ...] = (
    # what Corral composes from the whole fleet
    route("GET,HEAD", "/", "root", body=Body.NONE),
    route("GET,HEAD", "/api/version", "version", body=Body.NONE),
    route("GET,HEAD", "/api/tags", "tags", body=Body.NONE),
    route("GET", "/api/ps", "ps", body=Body.NONE),
    route("GET", "/v1/models", "v1_models", body=Body.NONE),
    route("GET", "/v1/models/{model}", "v1_model", body=Body.NONE),
    # inference: one node chosen by model and load
    infer("/api/generate"),
    infer("/api/chat"),
    infer("/api/embed"),
    infer("/api/embeddings"),
    route("POST", "/api/show", "inference", model=True),
    infer("/v1/chat/completions"),
    infer("/v1/completions"),
    infer("/v1/embeddings"),
    infer("/v1/responses"),
    route("POST", "/v1/messages", "inference", tokens=True, model=True, family=ApiFamily.ANTHROPIC),
    infer("/v1/audio/transcriptions"),  # multipart: the model is a form field
    # model management on the node named by X-Corral-Node
    route("POST", "/api/pull", "node_ops", access=Access.ADMIN),
    route("POST", "/api/push", "node_ops", access=Access.ADMIN),
    route("POST", "/api/create", "node_ops", access=Access.ADMIN),
    route("POST", "/api/copy", "node_ops", access=Access.ADMIN),
    route("DELETE", "/api/delete", "node_ops", access=Access.ADMIN),
    route("HEAD", "/api/blobs/{digest}", "node_ops", access=Access.ADMIN, body=Body.NONE),
    route("POST", "/api/blobs/{digest}", "node_ops", access=Access.ADMIN, body=Body.STREAM),
    # no model: one healthy node answers (Ollama's account, cloud and experimental routes)
    route("GET", "/api/status", "passthrough", body=Body.NONE),
    route("GET", "/api/experimental/model-recommendations", "passthrough", body=Body.NONE),
    route("POST", "/api/experimental/web_search", "passthrough"),
    route("POST", "/api/experimental/web_fetch", "passthrough"),
    route("POST", "/api/me", "passthrough", access=Access.ADMIN),
    route("POST", "/api/signout", "passthrough", access=Access.ADMIN),
    route("DELETE", "/api/user/keys/{encodedKey}", "passthrough", access=Access.ADMIN),
    # Corral's own
    probe("/health", "health"),
    probe("/ready", "ready"),
    route("GET", "/metrics", "metrics", access=Access.METRICS, limited=False, body=Body.NONE, family=ApiFamily.OLLAMA),
    route("GET", "/internal/status", "status", body=Body.NONE, family=ApiFamily.OLLAMA),
    admin("GET", "/admin/backends", "backends_list", Body.NONE),
    admin("POST", "/admin/backends", "backends_add"),
    admin("GET,POST,DELETE", "/admin/backends/{name}", "backends_by_name"),
    admin("POST", "/admin/reload", "reload"),  # re-reads the configuration (app/reload.py)
    admin("GET", "/admin/models", "models_inventory", Body.NONE),
    admin("POST", "/admin/models/{action}", "models_action"),
    admin("GET", "/admin/rollouts", "rollouts_list", Body.NONE),
    admin("POST", "/admin/rollouts", "rollouts_start"),
    admin("GET", "/admin/keys", "keys_list", Body.NONE),
    admin("POST", "/admin/keys", "keys_create"),
    admin("POST,DELETE", "/admin/keys/{name}", "keys_by_name"),
    # the web console (docs/console.md); what it changes, it changes through the admin routes above
    console("/ui", "console_page"),
    console("/ui/{file}", "console_file"),
    console("/ui/api/session", "console_session"),
    console("/ui/api/overview", "console_overview", Access.USER),
    console("/ui/api/traffic", "console_traffic", Access.USER),
    console("/ui/api/keys", "console_keys", Access.ADMIN),
)

CONSOLE_HANDLERS = frozenset(r.handler for r in ROUTES if r.path.startswith("/ui"))


def inference_paths(routes: tuple[RouteSpec, ...] = ROUTES) -> tuple[str, ...]:
    """The paths whose requests generate or embed (metrics preset their series)."""
    return tuple(dict.fromkeys(r.path for r in routes if r.inference))


def limited_paths(routes: tuple[RouteSpec, ...] = ROUTES) -> frozenset[str]:
    """The paths whose requests count against request-rate limits."""
    return frozenset(r.path for r in routes if r.limited)
