"""The simulated Ollama node as a raw ASGI app: gin's routing rules (404, 405, trailing-slash
redirects), every route of ollama-api.md §2 that a gateway relays, and `/_sim/*` for tests."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from corral.sim.anthropic import AnthropicRoutes
from corral.sim.engine import Engine
from corral.sim.gojson import decode, first_value, plain
from corral.sim.manage import ManageRoutes
from corral.sim.native import NativeRoutes
from corral.sim.openai import OpenAIRoutes
from corral.sim.options import SimOptions
from corral.sim.responses import ResponsesRoutes
from corral.sim.schemas import BY_PATH
from corral.sim.stream import Drop
from corral.sim.wire import JSON_UTF8, BadRequest, Conn, Receive, Scope, Send, go_json

JsonHandler = Callable[[Conn, dict[str, Any]], Awaitable[None]]
_TEXT = b"text/plain; charset=utf-8"
_INFERENCE = frozenset(
    {"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"}
    | {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"}
)


def _local_host(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the Host header passes Ollama's allowedHostsMiddleware (routes.go:1755-1839)."""
    raw = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), "")
    host = raw.rpartition(":")[0] if ":" in raw and not raw.endswith("]") else raw  # drop the port
    host = host.strip("[]").lower()
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fault_value(key: str, value: Any) -> Any:
    """A fault setting checked against its type, so a typo cannot break the node's request path."""
    if key not in SimOptions.FAULTS:
        raise BadRequest(400, f"unknown fault {key!r}; one of {', '.join(SimOptions.FAULTS)}")
    if key == "hang":
        ok = isinstance(value, bool)
    elif key in ("drop_after", "midstream_error_after"):
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        ok = ok and (key != "tokens_per_second" or value > 0)
    if not ok:
        raise BadRequest(400, f"invalid value for fault {key!r}: {value!r}")
    return value


class SimApp:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.engine = Engine(options)
        self.native = NativeRoutes(self.engine)
        self.manage = ManageRoutes(self.engine, options.fail_pull)
        self.openai = OpenAIRoutes(self.engine)
        self.responses = ResponsesRoutes(self.engine)
        self.anthropic = AnthropicRoutes(self.engine)
        self._fault_defaults = {k: getattr(options, k) for k in SimOptions.FAULTS}
        # Ollama checks Host only when it listens on a loopback address.
        self._host_check = options.host_check and (options.host == "localhost" or _is_loopback(options.host))
        n, m = self.native, self.manage
        self.json_routes: dict[str, tuple[str, JsonHandler]] = {
            "/api/generate": ("POST", n.generate),
            "/api/chat": ("POST", n.chat),
            "/api/embed": ("POST", n.embed),
            "/api/embeddings": ("POST", n.embeddings),
            "/api/show": ("POST", m.show),
            "/api/pull": ("POST", m.pull),
            "/api/push": ("POST", m.push),
            "/api/create": ("POST", m.create),
            "/api/copy": ("POST", m.copy),
            "/api/delete": ("DELETE", m.delete),
            "/v1/chat/completions": ("POST", lambda c, d: self.openai.complete("chat", c, d)),
            "/v1/completions": ("POST", lambda c, d: self.openai.complete("generate", c, d)),
            "/v1/embeddings": ("POST", self.openai.embeddings),
            "/v1/responses": ("POST", self.responses.create),
            "/v1/messages": ("POST", self.anthropic.messages),
            "/_sim/faults": ("POST", self._faults),
            "/_sim/reset": ("POST", self._reset),
        }
        self.get_routes: dict[str, tuple[str, ...]] = {
            "/": ("GET", "HEAD"),
            "/api/version": ("GET", "HEAD"),
            "/api/tags": ("GET", "HEAD"),
            "/api/ps": ("GET",),
            "/api/status": ("GET",),
            "/v1/models": ("GET",),
            "/_sim/stats": ("GET",),
        }

    def _allowed(self, path: str) -> tuple[str, ...] | None:
        if path in self.json_routes:
            return (self.json_routes[path][0],)
        if path in self.get_routes:
            return self.get_routes[path]
        if path.startswith("/api/blobs/") and path.count("/") == 3 and len(path) > 11:
            return ("HEAD", "POST")
        if path.startswith("/v1/models/") and path.count("/") == 3 and len(path) > 11:
            return ("GET",)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        self.engine.stats.seen(path, method, scope["headers"])
        conn = Conn(scope, receive, send)
        if self._host_check and not _local_host(scope["headers"]):
            await conn.respond(403, b"", _TEXT)
            return
        allowed = self._allowed(path)
        if allowed is None:
            if path != "/" and path.endswith("/") and self._allowed(path.rstrip("/")):
                # gin's RedirectTrailingSlash: 301 for GET, 307 for other methods.
                location = path.rstrip("/").encode()
                await conn.start(301 if method == "GET" else 307, _TEXT, [(b"location", location)])
                await conn.write(b"", more=False)
                return
            await conn.respond(404, b"404 page not found", _TEXT)
            return
        if method not in allowed:
            await conn.respond(405, b"405 method not allowed", _TEXT)
            return
        try:
            await self._dispatch(conn, path, method)
        except BadRequest as exc:
            if conn.started:  # cannot change the status any more: end the stream with the error
                await conn.write(go_json({"error": exc.message}) + b"\n", more=False)
            elif path == "/v1/messages":
                await conn.anthropic_error(exc.status, exc.message)
            elif path.startswith("/v1/"):
                await conn.openai_error(exc.status, exc.message)
            else:
                await conn.error(exc.status, exc.message)
        except Drop:
            if not conn.started:  # headers first, so the client sees a cut body, not a 500
                await conn.start(200, JSON_UTF8)
            raise
        except ConnectionResetError:
            pass  # the client left while sending its body

    async def _dispatch(self, conn: Conn, path: str, method: str) -> None:
        if path in self.json_routes:
            body = await conn.read_body()
            if path in BY_PATH:
                doc = decode(body, BY_PATH[path])
            else:
                doc = plain(first_value(body)) if body.strip() else {}
                if not isinstance(doc, dict):
                    raise BadRequest(400, "expected a JSON object")
            handler = self.json_routes[path][1]
            if path in _INFERENCE or path in ("/api/pull", "/api/push", "/api/create"):
                await self._until_disconnect(conn, handler(conn, doc), inference=path in _INFERENCE)
            else:
                await handler(conn, doc)
        elif path == "/":
            await conn.respond(200, b"Ollama is running", _TEXT)
        elif path == "/api/version":
            await conn.json({"version": self.options.version})
        elif path == "/api/tags":
            await conn.json(self.manage.tags())
        elif path == "/api/ps":
            await conn.json(self.manage.ps())
        elif path == "/api/status":
            # server/routes.go StatusHandler: whether cloud models are turned off, and by what.
            await conn.json({"cloud": {"disabled": False, "source": "none"}})
        elif path == "/v1/models":
            await conn.respond(200, self.openai.models(), b"application/json")
        elif path.startswith("/v1/models/"):
            await conn.respond(200, self.openai.model(path[len("/v1/models/") :]), b"application/json")
        elif path.startswith("/api/blobs/"):
            await self.manage.blob(conn, path[len("/api/blobs/") :], method)
        elif path == "/_sim/stats":
            await conn.json(self.stats())

    async def _until_disconnect(self, conn: Conn, work: Awaitable[None], inference: bool) -> None:
        """Run the handler; if the client disconnects first, cancel it at once (as Ollama's request
        context does), which frees its queue place or slot."""
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await conn.receive())["type"] != "http.disconnect":
                pass
            if not conn.finished:  # uvicorn also reports "disconnect" once the response is complete
                gone = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await work
        except asyncio.CancelledError:
            if not gone:
                raise
            if inference:
                self.engine.stats.cancelled += 1
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def stats(self) -> dict[str, Any]:
        sched = self.engine.scheduler
        return {
            **self.engine.stats.snapshot(),
            "loads": sched.loads,
            "evictions": sched.evictions,
            "reloads": sched.reloads,
            "unloads": sched.unloads,
            "pending": sched.pending,
            "loaded": sorted(sched.runners),
            "faults": {k: getattr(self.options, k) for k in SimOptions.FAULTS},
        }

    async def _faults(self, conn: Conn, doc: dict[str, Any]) -> None:
        values = {key: _fault_value(key, value) for key, value in doc.items()}
        for key, value in values.items():
            setattr(self.options, key, value)
        await conn.json(self.stats())

    async def _reset(self, conn: Conn, doc: dict[str, Any]) -> None:
        for key, value in self._fault_defaults.items():
            setattr(self.options, key, value)
        self.engine.stats.reset()
        self.engine.scheduler.reset_counters()
        await conn.json(self.stats())
