"""The simulated node's inference: /api/generate, /api/chat, /api/embed, /api/embeddings.

`Engine.infer` runs one generate/chat request against the scheduler and yields Ollama's own chunk
objects; the native handlers frame them as NDJSON, the OpenAI handlers (openai.py) as SSE.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from corral.sim.catalog import ModelInfo, count_words, embed, generate_tokens, model_info, normalize
from corral.sim.options import SimOptions
from corral.sim.scheduler import QueueFull, Scheduler
from corral.sim.wire import BadRequest, now_rfc3339

LOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
THINK_VALUES = (True, False, "low", "medium", "high", "max")
_DURATION = re.compile(r"^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
BUSY = "server busy, please try again.  maximum pending requests exceeded"


def parse_keep_alive(value: object, default: str) -> float:
    """Seconds; negative means forever. Numbers are seconds, strings Go durations (ollama-api.md §4.2)."""
    if value is None:
        value = default
    if isinstance(value, bool):
        raise BadRequest(400, "Unsupported type")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in ("0", "-0"):
            return 0.0
        m = _DURATION.match(value.strip())
        if not m:
            raise BadRequest(
                400,
                f'time: missing unit in duration "{value}"'
                if value.strip().lstrip("+-").replace(".", "").isdigit()
                else f'time: invalid duration "{value}"',
            )
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(value))
        return -seconds if m.group(1) == "-" else seconds
    raise BadRequest(400, "Unsupported type")


@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    max_in_flight_by_model: dict[str, int] = field(default_factory=dict)
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    tokens: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)

    def begin(self, model: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        now = self.in_flight_by_model.get(model, 0) + 1
        self.in_flight_by_model[model] = now
        self.max_in_flight_by_model[model] = max(self.max_in_flight_by_model.get(model, 0), now)

    def end(self, model: str) -> None:
        self.in_flight -= 1
        self.in_flight_by_model[model] -= 1


class Engine:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.models: dict[str, ModelInfo] = {normalize(m): model_info(m) for m in options.models}
        self.scheduler = Scheduler(options.max_loaded, options.parallel, options.max_queue, options.load_seconds)
        self.stats = Stats()
        self.rng = random.Random(options.seed)

    def find(self, name: object, quoted: bool = False) -> ModelInfo:
        if not isinstance(name, str) or not name:
            raise BadRequest(404, "model '' not found")
        info = self.models.get(normalize(name))
        if info is None:
            raise BadRequest(
                404, f'model "{name}" not found, try pulling it first' if quoted else f"model '{name}' not found"
            )
        return info

    def check_think(self, doc: dict[str, Any], info: ModelInfo) -> bool:
        think = doc.get("think")
        if think is None:
            return info.thinking
        if think not in THINK_VALUES or (isinstance(think, int) and not isinstance(think, bool)):
            raise BadRequest(400, f"invalid think value: {think!r}")
        if think is not False and not info.thinking:
            raise BadRequest(400, f'"{info.name}" does not support thinking')
        return think is not False

    async def faults_before_first_byte(self) -> None:
        o = self.options
        if o.hang:
            await asyncio.Event().wait()
        if o.latency_ms:
            await asyncio.sleep(o.latency_ms / 1000)
        if o.error_rate and self.rng.random() < o.error_rate:
            raise BadRequest(500, "simulated failure (error_rate fault)")

    async def infer(self, kind: str, doc: dict[str, Any], info: ModelInfo, text: str) -> AsyncIterator[dict[str, Any]]:
        """Yield Ollama chunk objects for one generate ("generate") or chat ("chat") request."""
        options = doc.get("options") if isinstance(doc.get("options"), dict) else {}
        assert isinstance(options, dict)
        session = parse_keep_alive(doc.get("keep_alive"), self.options.keep_alive_default)
        thinking = self.check_think(doc, info)
        top = doc.get("top_logprobs")
        if isinstance(top, int) and not 0 <= top <= 20:
            raise BadRequest(400, "top_logprobs must be between 0 and 20")
        if kind == "chat" and doc.get("tools") and info.embedding:
            raise BadRequest(400, f"registry.ollama.ai/library/{info.name} does not support tools")
        for key in ("num_ctx", "num_predict", "seed"):
            if key in options and not isinstance(options[key], int | float):
                raise BadRequest(500, f'option "{key}" must be of type integer')
        options_key = ",".join(f"{k}={options[k]}" for k in LOAD_OPTIONS if k in options)
        num_ctx = int(options.get("num_ctx") or info.context_length)
        await self.faults_before_first_byte()
        started = time.monotonic_ns()
        try:
            runner, load_s = await self.scheduler.acquire(info, options_key, num_ctx, session)
        except QueueFull:
            raise BadRequest(503, BUSY) from None
        model = doc["model"]
        self.stats.begin(info.name)
        try:
            async with runner.slots:
                runner.active += 1
                try:
                    async for chunk in self._tokens(kind, model, info, text, options, thinking, doc, started, load_s):
                        yield chunk
                finally:
                    runner.active -= 1
        finally:
            self.stats.end(info.name)
            self.scheduler.release(runner)

    async def _tokens(
        self,
        kind: str,
        model: str,
        info: ModelInfo,
        text: str,
        options: dict[str, Any],
        thinking: bool,
        doc: dict[str, Any],
        started: int,
        load_s: float,
    ) -> AsyncIterator[dict[str, Any]]:
        predict = options.get("num_predict")
        seed = int(options.get("seed", self.options.seed) or 0)
        tokens, reason = generate_tokens(info.name, text, seed, int(predict) if predict is not None else None)
        stops = options.get("stop") or []
        if isinstance(stops, str):
            stops = [stops]
        tool_call = kind == "chat" and bool(doc.get("tools")) and re.search(r"weather|call|tool", text, re.I)
        prompt_count = count_words(text)
        prompt_ns = int(prompt_count / 2000 * 1e9) + 1
        first_token = time.monotonic_ns()
        emitted = ""
        count = 0
        fmt = doc.get("format")
        if fmt:
            tokens = ['{"answer": ', f'"{" ".join(t.strip() for t in tokens[:3])}"', "}"]
            reason = "stop"
        if thinking and not fmt:
            for word in ("Let", " me", " think."):
                await self._pace()
                yield self._chunk(kind, model, "", thinking=word)
        for token in tokens:
            if tool_call:
                break
            if any(s and s in emitted + token for s in stops):
                reason = "stop"
                break
            await self._pace()
            emitted += token
            count += 1
            self.stats.tokens += 1
            yield self._chunk(kind, model, token)
        final = self._chunk(kind, model, "")
        if tool_call:
            final["message"]["tool_calls"] = [
                {
                    "id": "call_sim0001",
                    "function": {
                        "index": 0,
                        "name": doc["tools"][0].get("function", {}).get("name", "tool"),
                        "arguments": {"location": "Paris"},
                    },
                }
            ]
            count = max(count, 1)
        now = time.monotonic_ns()
        final.update(done=True, done_reason=reason)
        if kind == "generate" and not doc.get("raw"):
            final["context"] = [1, 2, 3, count]
        final.update(
            total_duration=now - started,
            load_duration=int(load_s * 1e9) or 1,
            prompt_eval_count=prompt_count,
            prompt_eval_duration=prompt_ns,
            eval_count=count,
            eval_duration=max(1, now - first_token),
        )
        yield final

    async def _pace(self) -> None:
        tps = self.options.tokens_per_second
        if tps >= 5000:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(1.0 / tps)

    @staticmethod
    def _chunk(kind: str, model: str, token: str, thinking: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
        if kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": token}
            if thinking is not None:
                message["thinking"] = thinking
            chunk["message"] = message
        else:
            chunk["response"] = token
            if thinking is not None:
                chunk["thinking"] = thinking
        chunk["done"] = False
        return chunk

    async def load_or_unload(self, kind: str, doc: dict[str, Any], info: ModelInfo) -> dict[str, Any]:
        """An empty prompt (or messages: []): load the model, or with keep_alive 0 unload it."""
        session = parse_keep_alive(doc.get("keep_alive"), self.options.keep_alive_default)
        base: dict[str, Any] = {"model": doc["model"], "created_at": now_rfc3339()}
        if kind == "chat":
            base["message"] = {"role": "assistant", "content": ""}
        else:
            base["response"] = ""
        if session == 0:
            self.scheduler.unload_now(info.name)
            return {**base, "done": True, "done_reason": "unload"}
        try:
            runner, _ = await self.scheduler.acquire(info, "", info.context_length, session)
        except QueueFull:
            raise BadRequest(503, BUSY) from None
        self.scheduler.release(runner)
        return {**base, "done": True, "done_reason": "load"}

    def embeddings(self, info: ModelInfo, inputs: list[str], dims: int | None) -> list[list[float]]:
        out = []
        for text in inputs:
            vector = embed(info.name, text)
            if dims:
                vector = vector[:dims]
                norm = sum(x * x for x in vector) ** 0.5 or 1.0
                vector = [x / norm for x in vector]
            out.append(vector)
        return out
