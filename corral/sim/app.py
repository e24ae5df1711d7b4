"""The simulated Ollama node as an ASGI app: every route of ollama-api.md §2 that a gateway relays,
plus `/_sim/*` for tests (stats, run-time faults, reset)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any

from corral.sim.catalog import model_info, normalize
from corral.sim.native import Engine
from corral.sim.openai import OpenAIRoutes
from corral.sim.options import SimOptions
from corral.sim.wire import (
    BadRequest,
    Receive,
    Scope,
    Send,
    Stream,
    go_json,
    local_time,
    parse_json,
    read_body,
    send_bytes,
    send_error,
    send_json,
)

NDJSON = b"application/x-ndjson"
ROUTES = {
    "/": ("GET", "HEAD"),
    "/api/version": ("GET", "HEAD"),
    "/api/tags": ("GET", "HEAD"),
    "/api/ps": ("GET",),
    "/api/generate": ("POST",),
    "/api/chat": ("POST",),
    "/api/embed": ("POST",),
    "/api/embeddings": ("POST",),
    "/api/show": ("POST",),
    "/api/pull": ("POST",),
    "/api/push": ("POST",),
    "/api/create": ("POST",),
    "/api/copy": ("POST",),
    "/api/delete": ("DELETE",),
    "/v1/chat/completions": ("POST",),
    "/v1/completions": ("POST",),
    "/v1/embeddings": ("POST",),
    "/v1/models": ("GET",),
    "/_sim/stats": ("GET",),
    "/_sim/faults": ("POST",),
    "/_sim/reset": ("POST",),
}


class Drop(Exception):
    """Raised mid-stream to make the server cut the connection (the drop_after fault)."""


class SimApp:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.engine = Engine(options)
        self.openai = OpenAIRoutes(self.engine, self.relay)
        self.blobs: set[str] = set()
        self._defaults = {k: getattr(options, k) for k in SimOptions.FAULTS}

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
        stats = self.engine.stats
        stats.requests[path] = stats.requests.get(path, 0) + 1
        if method == "POST" and not path.startswith("/_sim"):
            stats.last_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        allowed = ROUTES.get(path)
        if allowed is None and path.startswith("/api/blobs/"):
            allowed = ("HEAD", "POST")
        if allowed is None and path.startswith("/v1/models/"):
            allowed = ("GET",)
        if allowed is None:
            await send_bytes(send, 404, b"404 page not found", b"text/plain")
            return
        if method not in allowed:
            await send_bytes(send, 405, b"405 method not allowed", b"text/plain")
            return
        try:
            await self.dispatch(path, method, scope, receive, send)
        except BadRequest as exc:
            if path.startswith("/v1/"):
                from corral.sim.wire import send_openai_error

                await send_openai_error(send, exc.status, exc.message)
            else:
                await send_error(send, exc.status, exc.message)
        except asyncio.CancelledError:
            stats.cancelled += 1

    async def dispatch(self, path: str, method: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == "/":
            await send_bytes(send, 200, b"" if method == "HEAD" else b"Ollama is running", b"text/plain; charset=utf-8")
        elif path == "/api/version":
            await send_json(send, {"version": self.options.version})
        elif path == "/api/tags":
            models = sorted(self.engine.models.values(), key=lambda m: m.modified_at, reverse=True)
            await send_json(send, {"models": [m.tags_entry() for m in models]})
        elif path == "/api/ps":
            await send_json(send, {"models": self.ps()})
        elif path.startswith("/_sim/"):
            await self.control(path, receive, send)
        elif path.startswith("/api/blobs/"):
            await self.blob(path[len("/api/blobs/") :], method, receive, send)
        elif path.startswith("/v1/"):
            await self.openai.handle(path, receive, send)
        else:
            doc = parse_json(await read_body(receive))
            handler = getattr(self, "api_" + path.rsplit("/", 1)[1])
            await handler(doc, receive, send)

    def ps(self) -> list[dict[str, Any]]:
        out = []
        for runner in self.engine.scheduler.runners.values():
            info = runner.info
            size = info.size + runner.num_ctx * runner.parallel * 2048
            out.append(
                {
                    "name": info.name,
                    "model": info.name,
                    "size": size,
                    "digest": info.digest,
                    "details": info.details(),
                    "expires_at": local_time(runner.expires_at),
                    "size_vram": size,
                    "context_length": runner.num_ctx,
                }
            )
        return sorted(out, key=lambda e: e["expires_at"], reverse=True)

    async def _stream_or_whole(self, kind: str, doc: dict[str, Any], text: str, receive: Receive, send: Send) -> None:
        info = self.engine.find(doc.get("model"))
        if info.embedding:
            raise BadRequest(400, f'"{info.name}" does not support {kind}')
        empty = not text if kind == "generate" else doc.get("messages") == []
        if empty:
            await send_json(send, await self.engine.load_or_unload(kind, doc, info))
            return
        chunks = self.engine.infer(kind, doc, info, text)
        if doc.get("stream", True) is False:
            parts: list[dict[str, Any]] = [c async for c in chunks]
            whole = parts[-1]
            key = "message" if kind == "chat" else "response"
            if kind == "chat":
                whole["message"]["content"] = "".join(p["message"]["content"] for p in parts)
                thinking = "".join(p["message"].get("thinking", "") for p in parts)
                if thinking:
                    whole["message"]["thinking"] = thinking
            else:
                whole[key] = "".join(p["response"] for p in parts)
            await send_json(send, whole)
            return
        stream = Stream(send, receive, NDJSON)
        await self.relay(stream, chunks, lambda c: go_json(c) + b"\n")

    async def relay(self, stream: Stream, chunks: Any, frame: Any, error_frame: Any = None) -> None:
        """Write chunks as they come; apply mid-stream faults; stop at once if the client leaves."""
        opts = self.options
        sent = 0
        gen = chunks.__aiter__()
        try:
            first = await gen.__anext__()
        except StopAsyncIteration:
            return
        await stream.start()
        waiter = asyncio.ensure_future(stream.gone.wait())
        errored = False
        try:
            chunk: Any = first
            while True:
                await stream.write(frame(chunk))
                sent += 1
                if opts.drop_after is not None and sent >= opts.drop_after:
                    raise Drop
                if opts.midstream_error_after is not None and sent >= opts.midstream_error_after:
                    msg = "simulated mid-stream failure"
                    await stream.write(error_frame(msg) if error_frame else go_json({"error": msg}) + b"\n")
                    errored = True
                    break
                nxt = asyncio.ensure_future(gen.__anext__())
                done, _ = await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if waiter in done:
                    # The client left: stop generating at once (the slot frees as the generator unwinds).
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    await gen.aclose()
                    raise asyncio.CancelledError
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
            if not errored and hasattr(frame, "tail"):
                await stream.write(frame.tail())
            await stream.end()
        finally:
            waiter.cancel()
            stream.close()

    async def api_generate(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        if doc.get("raw") and (doc.get("template") or doc.get("system") or doc.get("context")):
            raise BadRequest(400, "raw mode does not support template, system, or context")
        await self._stream_or_whole("generate", doc, str(doc.get("prompt") or ""), receive, send)

    async def api_chat(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        messages = doc.get("messages") or []
        text = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        if messages and not text:
            text = "."
        await self._stream_or_whole("chat", doc, text, receive, send)

    async def api_embed(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        info = self.engine.find(doc["model"], quoted=True)
        raw = doc.get("input")
        if raw is None or raw == "":
            inputs: list[str] = []
        elif isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = raw
        else:
            raise BadRequest(400, "invalid input type")
        await self.engine.faults_before_first_byte()
        started = time.monotonic_ns()
        vectors = self.engine.embeddings(info, inputs, doc.get("dimensions"))
        await send_json(
            send,
            {
                "model": doc["model"],
                "embeddings": vectors,
                "total_duration": time.monotonic_ns() - started + 1,
                "load_duration": 1,
                "prompt_eval_count": sum(len(t.split()) for t in inputs),
            },
        )

    async def api_embeddings(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        info = self.engine.find(doc["model"], quoted=True)
        prompt = doc.get("prompt") or ""
        vector = [x * 3.5 for x in self.engine.embeddings(info, [prompt], None)[0]] if prompt else []
        await send_json(send, {"embedding": vector})

    async def api_show(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        name = doc.get("model") or doc.get("name")
        if not name:
            raise BadRequest(400, "model is required")
        info = self.engine.find(name)
        await send_json(
            send,
            {
                "modelfile": f"FROM {info.name}\n",
                "parameters": 'stop "<|eot|>"',
                "template": "{{ .Prompt }}",
                "details": info.details(),
                "model_info": {"general.architecture": info.family, "general.parameter_count": info.size * 2},
                "capabilities": info.capabilities,
                "modified_at": info.modified_at.isoformat(),
            },
        )

    async def api_pull(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        name = doc.get("model") or doc.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(400, "model is required")
        info = model_info(name)
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        total = info.size
        for step in range(1, 6):
            lines.append(
                {
                    "status": f"pulling {info.digest[:12]}",
                    "digest": f"sha256:{info.digest}",
                    "total": total,
                    "completed": total * step // 5,
                }
            )
        lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        await self._progress(doc, lines, receive, send, lambda: self.engine.models.__setitem__(info.name, info))

    async def api_push(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        info = self.engine.find(doc.get("model") or doc.get("name"))
        lines: list[dict[str, Any]] = [
            {"status": "retrieving manifest"},
            {
                "status": f"pushing {info.digest[:12]}",
                "digest": f"sha256:{info.digest}",
                "total": info.size,
                "completed": info.size,
            },
            {"status": "pushing manifest"},
            {"status": "success"},
        ]
        await self._progress(doc, lines, receive, send, lambda: None)

    async def api_create(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        name = doc.get("model") or doc.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(400, "model is required")
        if doc.get("from"):
            self.engine.find(doc["from"])
        for digest in (doc.get("files") or {}).values():
            if digest not in self.blobs:
                raise BadRequest(400, f"blob {digest} not found")
        info = model_info(name)
        lines = [
            {"status": "parsing GGUF"},
            {"status": f"using existing layer sha256:{info.digest}"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        await self._progress(doc, lines, receive, send, lambda: self.engine.models.__setitem__(info.name, info))

    async def _progress(
        self, doc: dict[str, Any], lines: list[dict[str, Any]], receive: Receive, send: Send, commit: Any
    ) -> None:
        if doc.get("stream", True) is False:
            await asyncio.sleep(0.05 * len(lines))
            commit()
            await send_json(send, {"status": "success"})
            return
        stream = Stream(send, receive, NDJSON)
        await stream.start()
        try:
            for line in lines:
                if line["status"] == "success":
                    commit()
                await stream.write(go_json(line) + b"\n")
                await asyncio.sleep(0.05)
            await stream.end()
        finally:
            stream.close()

    async def api_copy(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        source, dest = doc.get("source"), doc.get("destination")
        if not isinstance(dest, str) or not dest:
            raise BadRequest(400, f'destination "{dest}" is invalid')
        if not isinstance(source, str) or normalize(source) not in self.engine.models:
            raise BadRequest(404, f'model "{source}" not found')
        self.engine.models[normalize(dest)] = model_info(dest)
        await send_bytes(send, 200, b"", b"text/plain; charset=utf-8")

    async def api_delete(self, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        name = doc.get("model") or doc.get("name")
        if not isinstance(name, str) or normalize(name) not in self.engine.models:
            raise BadRequest(404, f"model '{name}' not found")
        del self.engine.models[normalize(name)]
        self.engine.scheduler.unload_now(normalize(name))
        await send_bytes(send, 200, b"", b"text/plain; charset=utf-8")

    async def blob(self, digest: str, method: str, receive: Receive, send: Send) -> None:
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise BadRequest(400, "invalid digest format")
        if method == "HEAD":
            await send_bytes(send, 200 if digest in self.blobs else 404, b"", b"application/json; charset=utf-8")
            return
        body = await read_body(receive)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != digest:
            raise BadRequest(400, f'digest mismatch, expected "{digest}", got "{actual}"')
        status = 200 if digest in self.blobs else 201
        self.blobs.add(digest)
        await send_bytes(send, status, b"", b"application/json; charset=utf-8")

    async def control(self, path: str, receive: Receive, send: Send) -> None:
        stats = self.engine.stats
        sched = self.engine.scheduler
        if path == "/_sim/faults":
            doc = parse_json(await read_body(receive))
            for key, value in doc.items():
                if key not in SimOptions.FAULTS:
                    raise BadRequest(400, f"unknown fault {key!r}; one of {', '.join(SimOptions.FAULTS)}")
                setattr(self.options, key, value)
        elif path == "/_sim/reset":
            for key, value in self._defaults.items():
                setattr(self.options, key, value)
        body = {
            "requests": stats.requests,
            "in_flight": stats.in_flight,
            "max_in_flight": stats.max_in_flight,
            "in_flight_by_model": stats.in_flight_by_model,
            "max_in_flight_by_model": stats.max_in_flight_by_model,
            "cancelled": stats.cancelled,
            "tokens": stats.tokens,
            "loads": sched.loads,
            "evictions": sched.evictions,
            "pending": sched.pending,
            "loaded": sorted(sched.runners),
            "last_headers": stats.last_headers,
            "faults": {k: getattr(self.options, k) for k in SimOptions.FAULTS},
        }
        await send_bytes(send, 200, json.dumps(body).encode(), b"application/json")
