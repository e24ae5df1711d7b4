"""Ollama's native inference routes: /api/generate, /api/chat, /api/embed, /api/embeddings."""

from __future__ import annotations

import time
from typing import Any

from corral.sim.catalog import stable_hash
from corral.sim.engine import Engine
from corral.sim.request import check_top_logprobs, prepare, unload_requested
from corral.sim.stream import NdjsonFramer, collect, merge, relay
from corral.sim.wire import BadRequest, Conn

_NDJSON = NdjsonFramer()


class NativeRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.options = engine.options

    async def generate(self, conn: Conn, doc: dict[str, Any]) -> None:
        await self._infer("generate", conn, doc)

    async def chat(self, conn: Conn, doc: dict[str, Any]) -> None:
        await self._infer("chat", conn, doc)

    async def _infer(self, kind: str, conn: Conn, doc: dict[str, Any]) -> None:
        check_top_logprobs(doc)
        if kind == "chat" and not str(doc.get("model") or "").strip():
            raise BadRequest(400, "model is required")
        info = self.engine.find(doc.get("model"))
        # Load and unload answer one object whatever `stream` says (routes.go answers them with c.JSON).
        if unload_requested(kind, doc, self.options.keep_alive_default):
            await conn.json(self.engine.unload(kind, str(doc.get("model")), info))
            return
        inf = prepare(kind, doc, info, self.options.keep_alive_default)
        if inf.empty:
            await conn.json(await self.engine.load(inf))
            return
        chunks = self.engine.generate(inf)
        if doc.get("stream") is False:
            parts = await collect(chunks, self.options, self.engine.stats)
            await conn.json(merge(kind, parts))
        else:
            await relay(conn, chunks, _NDJSON, self.options, self.engine.stats)

    async def embed(self, conn: Conn, doc: dict[str, Any]) -> None:
        """EmbedHandler (server/routes.go): the model name first (empty: 404), then the input's
        type; every string of a list is embedded, empty ones too. Only an empty string or no
        input at all (or []) is a load request."""
        if not str(doc.get("model") or "").strip():
            raise BadRequest(404, f"model '{doc.get('model') or ''}' not found")
        raw = doc.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            raise BadRequest(400, "invalid input type")
        info = self.engine.find(doc["model"], pull_hint=True)
        dims = int(doc.get("dimensions") or 0)
        started = time.monotonic_ns()
        vectors, tokens = await self.engine.embed(doc, info, inputs, dims if dims > 0 else None)
        if not inputs:
            await conn.json({"model": doc["model"], "embeddings": []})
            return
        elapsed = time.monotonic_ns() - started
        await conn.json(
            {
                "model": doc["model"],
                "embeddings": vectors,
                "total_duration": max(1, elapsed),
                "load_duration": max(1, elapsed // 10),
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(self, conn: Conn, doc: dict[str, Any]) -> None:
        """The legacy route: one prompt, one vector, not normalised."""
        if not doc.get("model"):
            raise BadRequest(400, "model is required")
        info = self.engine.find(doc["model"], pull_hint=True)
        prompt = doc.get("prompt") or ""
        if not isinstance(prompt, str):
            raise BadRequest(400, "json: cannot unmarshal prompt into Go struct field EmbeddingRequest.prompt")
        vectors, _ = await self.engine.embed(doc, info, [prompt] if prompt else [], None)
        scale = 2.0 + stable_hash("scale", info.name) % 300 / 100  # real models' raw vectors are not unit
        await conn.json({"embedding": [x * scale for x in vectors[0]] if vectors else []})
