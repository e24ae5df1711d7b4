"""The embeddings cache: one entry per input string, so a batch whose inputs were seen before sends only
the others to a node, and gets its vectors back in its own order, as the node writes them
(corral.protocol.embed_wire keeps each vector's bytes; docs/cache.md).

- every input cached: the answer is built here (counts and durations zero, as Ollama leaves them out);
- none cached: the request goes to a node unchanged, its answer to the client as relayed, and each
  vector is stored;
- some cached: a node is sent the same request with only the missing inputs (each once), and the
  answer is its answer with the whole batch's vectors spliced in; its counts are the node's, for the
  inputs it computed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from corral.app.cache import HIT, MISS, PER_REQUEST, CacheContext, CacheControl
from corral.app.downstream import Collector, Downstream, Tee
from corral.app.headers import Outbound
from corral.domain.errors import UpstreamProtocol, UpstreamStatus
from corral.domain.record import RequestRecord
from corral.net.response import Headers, Response
from corral.protocol import embed_wire
from corral.protocol.body import encode
from corral.protocol.cache_keys import EmbedPlan, embed_key, embed_plan
from corral.protocol.prompts import BYTES_PER_TOKEN

log = logging.getLogger(__name__)

KIND = "embeddings"
HITS_HEADER = b"x-corral-cache-hits"
# For an answer no node wrote (until a node has answered one): gin's c.JSON on the native routes, the
# openai middleware's json.NewEncoder on /v1.
DEFAULT_TYPES = {
    "embed": b"application/json; charset=utf-8",
    "embeddings": b"application/json; charset=utf-8",
    "v1-float": b"application/json",
    "v1-base64": b"application/json",
}

Forward = Callable[[Outbound, Downstream], Awaitable[None]]


class EmbedCache:
    def __init__(self, ctx: CacheContext) -> None:
        self.ctx = ctx
        self.models = ctx.settings.embeddings.models
        self._tasks: set[asyncio.Task[int]] = set()
        self._content_type: dict[str, bytes] = {}  # per answer kind: what the nodes last sent

    async def serve(
        self,
        route: str,
        model: str,
        doc: dict[str, Any],
        out: Outbound,
        control: CacheControl,
        response: Response,
        record: RequestRecord,
        forward: Forward,
    ) -> bool:
        """Answer the request through the cache; False when it does not apply (the caller forwards)."""
        plan = embed_plan(route, doc) if self.ctx.allowed(self.models, model) else None
        digest = self.ctx.digest(model) if plan is not None else None
        if plan is None or digest is None:
            return False
        scope = self.ctx.scope(record)
        keys = [embed_key(plan, model, digest, scope, text) for text in plan.texts]
        found: dict[str, bytes] = {}
        if control.read:
            unique = list(dict.fromkeys(keys))
            found = {k: v for k, v in zip(unique, await self.ctx.store.get_many(unique), strict=True) if v is not None}
        missing = [i for i, k in enumerate(keys) if k not in found]
        hits = len(keys) - len(missing)
        result = "hit" if not missing else "miss" if not hits else "partial"
        if not control.read:
            result = "bypass"
        self.ctx.count(KIND, result)
        record.cache = result
        if not missing:
            self._answer_whole(plan, keys, found, str(doc.get("model", "")), response, record)
            return True
        if not hits:
            await self._all_missing(plan, keys, control, out, response, record, forward)
            return True
        await self._some_missing(plan, keys, found, missing, doc, control, out, response, record, forward)
        return True

    def _answer_whole(
        self,
        plan: EmbedPlan,
        keys: list[str],
        found: dict[str, bytes],
        model: str,
        response: Response,
        rec: RequestRecord,
    ) -> None:
        body = embed_wire.assemble(plan.kind, [found[k] for k in keys], None, model)
        headers: Headers = [
            (b"content-type", self._content_type.get(plan.kind, DEFAULT_TYPES[plan.kind])),
            (b"x-request-id", rec.request_id.encode()),
            HIT,
            (HITS_HEADER, str(len(keys)).encode()),
        ]
        rec.status = 200
        rec.prompt_tokens = self._estimate(plan.texts) if self.ctx.charge_hits else 0
        rec.completion_tokens = 0
        response.send(200, headers, body)

    async def _all_missing(
        self,
        plan: EmbedPlan,
        keys: list[str],
        control: CacheControl,
        out: Outbound,
        response: Response,
        record: RequestRecord,
        forward: Forward,
    ) -> None:
        response.extra_headers = [*response.extra_headers, MISS, (HITS_HEADER, b"0")]
        tee = Tee(response, 1 << 62)  # every vector is stored on its own, each within max_entry_bytes
        await forward(out, tee)
        answer = tee.recording()
        if answer is None or answer.status != 200 or record.error_kind is not None:
            return
        self._learn(plan.kind, answer.headers)
        parts = self._split(plan.kind, answer.body)
        if parts is not None and len(parts.items) == len(keys) and control.write:
            self._store(list(zip(keys, parts.items, strict=True)))

    async def _some_missing(
        self,
        plan: EmbedPlan,
        keys: list[str],
        found: dict[str, bytes],
        missing: list[int],
        doc: dict[str, Any],
        control: CacheControl,
        out: Outbound,
        response: Response,
        record: RequestRecord,
        forward: Forward,
    ) -> None:
        texts = list(dict.fromkeys(plan.texts[i] for i in missing))  # each missing text once
        field = "prompt" if plan.kind == "embeddings" else "input"
        body = encode({**doc, field: texts})
        collector = Collector()
        await forward(replace(out, body=body, canonical=None), collector)
        answer = collector.answer
        if answer is None or collector.aborted:
            return  # the forwarder has raised for what it could not relay
        if answer.status != 200:  # the node's error, about the inputs it was sent, passed on as it is
            kept = [(k, v) for k, v in answer.headers if k == b"content-type"]
            raise UpstreamStatus(f"node {record.node} answered {answer.status}", answer.status, answer.body, kept)
        parts = self._split(plan.kind, answer.body)
        if parts is None or len(parts.items) != len(texts):
            raise UpstreamProtocol(f"node {record.node} answered {len(texts)} inputs with another shape")
        self._learn(plan.kind, answer.headers)
        fresh = dict(zip(texts, parts.items, strict=True))
        items = [found[k] if k in found else fresh[plan.texts[i]] for i, k in enumerate(keys)]
        if control.write:
            self._store([(keys[i], fresh[plan.texts[i]]) for i in missing])
        headers = [(k, v) for k, v in answer.headers if k not in PER_REQUEST and k != b"content-length"]
        headers += [(k, v) for k, v in answer.headers if k in (b"x-request-id", b"x-corral-node")]
        headers += [MISS, (HITS_HEADER, str(len(keys) - len(missing)).encode())]
        if self.ctx.charge_hits:
            gap = set(missing)
            cached = [t for i, t in enumerate(plan.texts) if i not in gap]
            record.prompt_tokens = (record.prompt_tokens or 0) + self._estimate(cached)
        response.send(200, headers, embed_wire.assemble(plan.kind, items, parts, str(doc.get("model", ""))))

    def _split(self, kind: str, body: bytes) -> embed_wire.Split | None:
        try:
            return embed_wire.split(kind, body)
        except embed_wire.Malformed as exc:
            log.warning("embedding answer not cached: %s", exc)
            return None

    def _learn(self, kind: str, headers: Headers) -> None:
        for name, value in headers:
            if name == b"content-type":
                self._content_type[kind] = value

    def _store(self, items: list[tuple[str, bytes]]) -> None:
        task = asyncio.get_running_loop().create_task(self.ctx.store.put_many(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _estimate(texts: Any) -> int:
        return sum(max(1, len(t.encode()) // BYTES_PER_TOKEN) for t in texts)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
