"""The simulated node's inference: scheduling, faults and token generation for one request.

`Engine.generate` yields Ollama's own chunk objects for a generate or chat request; the native routes
frame them as NDJSON and the OpenAI routes (openai.py) as SSE, so both families share one behaviour.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from corral.sim import text as gen
from corral.sim.catalog import ModelInfo, model_info, normalize
from corral.sim.options import SimOptions
from corral.sim.params import check_options, load_key, parse_keep_alive
from corral.sim.prompt_cache import Turn, prompt_tokens
from corral.sim.request import Inference
from corral.sim.scheduler import LoadKey, QueueFull, Runner, Scheduler
from corral.sim.stats import Stats
from corral.sim.wire import BadRequest, now_rfc3339

BUSY = "server busy, please try again.  maximum pending requests exceeded"


class Engine:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.models: dict[str, ModelInfo] = {}
        for spec in options.models:
            info = model_info(spec)
            self.models[info.name] = info
        o = options
        # A bad default fails at start-up, not per request.
        default_s = parse_keep_alive(None, o.keep_alive_default)
        self.scheduler = Scheduler(
            o.max_loaded, o.parallel, o.max_queue, o.load_seconds, default_s, multiuser_cache=o.multiuser_cache
        )
        self.stats = Stats()
        self.rng = random.Random(options.seed)

    def find(self, name: object, pull_hint: bool = False) -> ModelInfo:
        """The model by any spelling of its name, or the 404 Ollama gives for that route."""
        text = name if isinstance(name, str) else ""
        info = self.models.get(normalize(text)) if text else None
        if info is None:
            message = f'model "{text}" not found, try pulling it first' if pull_hint else f"model '{text}' not found"
            raise BadRequest(404, message)
        return info

    async def faults_before_first_byte(self) -> None:
        o = self.options
        if o.hang:
            await asyncio.Event().wait()  # until the client gives up (the disconnect cancels this)
        if o.latency_ms:
            await asyncio.sleep(o.latency_ms / 1000)
        if o.error_rate and self.rng.random() < o.error_rate:
            self.stats.injected_errors += 1
            raise BadRequest(500, "simulated failure (error_rate fault)")

    async def _acquire(self, info: ModelInfo, key: LoadKey, session_s: float | None) -> Runner:
        memory = self.options.memory_gb
        if memory is not None and info.size > memory * 2**30:
            # NewLlamaServer's refusal (llm/server.go), answered 500 by handleScheduleError.
            need, free = info.size / 2**30, memory
            message = f"model requires more system memory ({need:.1f} GiB) than is available ({free:.1f} GiB)"
            raise BadRequest(500, message)
        try:
            return await self.scheduler.acquire(info, key, session_s)
        except QueueFull:
            self.stats.rejected_busy += 1
            raise BadRequest(503, BUSY) from None

    @staticmethod
    def _empty_answer(kind: str, model: str, reason: str) -> dict[str, Any]:
        base: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
        if kind == "chat":
            base["message"] = {"role": "assistant", "content": ""}
        else:
            base["response"] = ""
        return {**base, "done": True, "done_reason": reason}

    def unload(self, kind: str, model: str, info: ModelInfo) -> dict[str, Any]:
        """keep_alive 0 with an empty prompt (or messages: []): expire the runner, loaded or not."""
        self.scheduler.unload_now(info.name)
        return self._empty_answer(kind, model, "unload")

    async def load(self, inf: Inference) -> dict[str, Any]:
        """An empty prompt (or messages: []): load the model and answer at once."""
        runner = await self._acquire(inf.info, inf.key, inf.session_s)
        self.scheduler.release(runner)
        return self._empty_answer(inf.kind, inf.model, "load")

    async def generate(self, inf: Inference) -> AsyncGenerator[dict[str, Any], None]:
        """Chunk objects for one generate or chat request, paced at tokens_per_second."""
        started = time.monotonic_ns()
        await self.faults_before_first_byte()
        self.stats.waiting += 1
        waiting = True
        try:
            runner = await self._acquire(inf.info, inf.key, inf.session_s)
            try:
                async with runner.slots:
                    self.stats.waiting -= 1
                    waiting = False
                    load_ns = time.monotonic_ns() - started
                    self.stats.begin(inf.info.name)
                    turn = runner.cache.take(prompt_tokens(inf))
                    self.stats.prompt(turn.hit, turn.cached, turn.evaluated)
                    try:
                        async for chunk in self._tokens(inf, turn, started, load_ns):
                            yield chunk
                    finally:
                        runner.cache.release(turn)
                        self.stats.end(inf.info.name)
            finally:
                self.scheduler.release(runner)
        finally:
            if waiting:
                self.stats.waiting -= 1

    def _chunk(self, inf: Inference, content: str, thinking: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"model": inf.model, "created_at": now_rfc3339()}
        if inf.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking is not None:
                message["thinking"] = thinking
            chunk["message"] = message
        else:
            chunk["response"] = content
            if thinking is not None:
                chunk["thinking"] = thinking
        chunk["done"] = False
        if inf.logprobs and (content or thinking):
            token = content or thinking or ""
            lp = -round(random.Random(token).random() * 2, 4)
            entry: dict[str, Any] = {"token": token, "logprob": lp, "bytes": list(token.encode())}
            if inf.top_logprobs:
                entry["top_logprobs"] = [{"token": token, "logprob": lp}] * inf.top_logprobs
            chunk["logprobs"] = [entry]
        return chunk

    async def _prompt_eval(self, turn: Turn) -> int:
        """Evaluate the uncached prompt tokens (runner.go: the first token waits for them); their
        duration in ns, which prompt_eval_duration reports, as Ollama's runners time only this part."""
        rate = self.options.prompt_eval_rate
        if rate is not None and rate > 0:
            await asyncio.sleep(turn.evaluated / rate)
        turn.prompt_done = True
        rate = rate if rate is not None and rate > 0 else max(self.options.tokens_per_second, 1e-3) * 20
        return max(1, int(turn.evaluated / rate * 1e9))

    async def _tokens(
        self, inf: Inference, turn: Turn, started: int, load_ns: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        seed = inf.options.get("seed")
        seed = int(seed) if seed is not None else self.options.seed
        predict = inf.options.get("num_predict")
        budget = min(int(predict), gen.MAX_TOKENS) if predict is not None and predict >= 0 else gen.MAX_TOKENS
        stops = inf.options.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        call = gen.tool_call(inf.tools, inf.last_user, seed) if inf.tools and inf.last_user else None
        thoughts = gen.thinking_tokens(inf.info.name, inf.prompt, seed) if inf.think else []
        tokens: Iterable[str]
        if call is not None:
            tokens = ()
        elif inf.fmt is not None:
            tokens = gen.json_tokens(inf.info.name, inf.prompt, seed, inf.fmt)
        else:
            # With num_predict the model talks until the budget is spent (tests can ask for long streams).
            tokens = gen.answer_tokens(inf.info.name, inf.prompt, seed, None if predict is None else budget)
        count, text, stopped = 0, "", False
        prompt_ns = await self._prompt_eval(turn)
        first_token = time.monotonic_ns()
        pace = _Pacer(self.options)
        for word in thoughts[:budget]:
            await pace.next()
            count += 1
            self.stats.tokens += 1
            turn.thinking.append(word)
            yield self._chunk(inf, "", thinking=word)
        if call is not None and count < budget:
            await pace.next()
            count += gen.count_tokens(str(call["function"]["arguments"]))
            turn.answer.append(str(call["function"]["arguments"]))
            chunk = self._chunk(inf, "")
            chunk["message"]["tool_calls"] = [call]
            yield chunk
        for token in tokens:
            if count >= budget:
                break
            hit = min(((text + token).find(s) for s in stops if s and s in text + token), default=-1)
            if hit >= 0:  # a stop sequence: the text ends just before it
                stopped = True
                token = (text + token)[len(text) : max(hit, len(text))]
                if not token:
                    break
            await pace.next()
            count += 1
            text += token
            self.stats.tokens += 1
            turn.answer.append(token)
            yield self._chunk(inf, token)
            if stopped:
                break
        reason = "length" if count >= budget and not stopped else "stop"
        yield self._final(inf, turn, reason, count, (started, load_ns, prompt_ns, first_token))

    def _final(
        self, inf: Inference, turn: Turn, reason: str, count: int, times: tuple[int, int, int, int]
    ) -> dict[str, Any]:
        started, load_ns, prompt_ns, first_token = times
        final = self._chunk(inf, "")
        final.pop("logprobs", None)
        final.update(done=True, done_reason=reason)
        if inf.kind == "generate" and not inf.raw:
            final["context"] = turn.sequence().tolist()  # routes.go: Tokenize(prompt + response)
        now = time.monotonic_ns()
        final.update(
            total_duration=now - started,
            load_duration=max(load_ns, 1),
            # Ollama counts the whole prompt, cached or not (numPromptInputs in runner/*/runner.go; with
            # llama-server, cache_n + prompt_n in llm/llama_server.go); only the duration shrinks on a hit.
            prompt_eval_count=max(1, len(turn.prompt)),
            prompt_eval_duration=prompt_ns,
            eval_count=count,
            eval_duration=max(1, now - first_token),
        )
        return final

    async def embed(
        self, doc: dict[str, Any], info: ModelInfo, inputs: list[str], dims: int | None
    ) -> tuple[list[list[float]], int]:
        """Vectors for the inputs (empty: just load the model), and the prompt token count."""
        keep_alive = doc.get("keep_alive")
        session_s = None if keep_alive is None else parse_keep_alive(keep_alive, self.options.keep_alive_default)
        options = check_options(doc.get("options"))
        key = load_key(options, info.context_length)
        tokens = [gen.count_tokens(t) for t in inputs]
        if doc.get("truncate") is False and any(n > dict(key)["num_ctx"] for n in tokens):
            raise BadRequest(400, "the input length exceeds the context length")
        if not inputs:
            if session_s == 0:
                self.scheduler.unload_now(info.name)
            else:
                self.scheduler.release(await self._acquire(info, key, session_s))
            return [], 0
        await self.faults_before_first_byte()
        runner = await self._acquire(info, key, session_s)
        try:
            async with runner.slots:
                self.stats.begin(info.name)
                try:
                    # Encoding costs time too: a batch forward pass per input, ~20× faster than decoding
                    # unless the node is told its own rate.
                    rate = self.options.embed_tokens_per_second or self.options.tokens_per_second * 20
                    await asyncio.sleep(sum(tokens) / max(rate, 1e-3))
                    vectors = [gen.embedding(info.name, t, info.embedding_length) for t in inputs]
                finally:
                    self.stats.end(info.name)
        finally:
            self.scheduler.release(runner)
        if dims:
            vectors = [gen.unit_float32(v[:dims]) for v in vectors]
        return vectors, sum(tokens)


class _Pacer:
    """Sleeps so that the n-th token leaves at start + n / rate (no drift from per-token overhead)."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.n = 0

    async def next(self) -> None:
        self.n += 1
        rate = self.options.tokens_per_second
        delay = self.start + self.n / rate - self.loop.time() if rate > 0 else 0.0
        await asyncio.sleep(max(0.0, delay))
