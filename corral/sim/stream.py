"""Writing generated chunks to the client: streamed with mid-stream faults applied, or collected into
one object for `stream: false`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from corral.sim.options import SimOptions
from corral.sim.stats import Stats
from corral.sim.wire import BadRequest, Conn, go_json

MIDSTREAM_ERROR = "simulated mid-stream failure (midstream_error_after fault)"
Chunks = AsyncGenerator[dict[str, Any], None]


class Drop(Exception):
    """Raised to make the server cut the connection (the drop_after fault); uvicorn closes the socket."""


class Framer(Protocol):
    content_type: bytes

    def frame(self, chunk: dict[str, Any]) -> bytes: ...

    def tail(self) -> bytes: ...

    def error(self, message: str) -> bytes: ...


class NdjsonFramer:
    content_type = b"application/x-ndjson"

    def frame(self, chunk: dict[str, Any]) -> bytes:
        return go_json(chunk) + b"\n"

    def tail(self) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        return go_json({"error": message}) + b"\n"


async def relay(conn: Conn, chunks: Chunks, framer: Framer, options: SimOptions, stats: Stats) -> None:
    """Write chunks as they come. Errors before the first chunk stay HTTP errors (the caller renders
    them); after it, a failure is an error line in the stream, as in Ollama's streamResponse."""
    async with contextlib.aclosing(chunks):
        chunk = await anext(chunks, None)
        await conn.start(200, framer.content_type)
        sent = 0
        while chunk is not None:
            data = framer.frame(chunk)
            if data:
                await conn.write(data)
            if not chunk.get("done"):
                sent += 1
                if options.drop_after is not None and sent >= options.drop_after:
                    stats.dropped += 1
                    raise Drop
                if options.midstream_error_after is not None and sent >= options.midstream_error_after:
                    stats.midstream_errors += 1
                    await conn.write(framer.error(MIDSTREAM_ERROR), more=False)
                    return
            chunk = await anext(chunks, None)
        await conn.write(framer.tail(), more=False)


async def collect(chunks: Chunks, options: SimOptions, stats: Stats) -> list[dict[str, Any]]:
    """All chunks of a `stream: false` request; a mid-generation fault becomes a 500 or a cut connection."""
    parts: list[dict[str, Any]] = []
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            parts.append(chunk)
            n = len(parts)
            if options.drop_after is not None and n >= options.drop_after and not chunk.get("done"):
                stats.dropped += 1
                raise Drop
            if options.midstream_error_after is not None and n >= options.midstream_error_after:
                stats.midstream_errors += 1
                raise BadRequest(500, MIDSTREAM_ERROR)
    return parts


def merge(kind: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One object for `stream: false`: text, thinking and tool calls concatenated onto the final chunk."""
    whole = dict(parts[-1])
    if kind == "chat":
        message = dict(whole["message"])
        message["content"] = "".join(p["message"].get("content", "") for p in parts)
        thinking = "".join(p["message"].get("thinking", "") for p in parts)
        if thinking:
            message["thinking"] = thinking
        calls = [c for p in parts for c in p["message"].get("tool_calls", [])]
        if calls:
            message["tool_calls"] = calls
        whole["message"] = message
    else:
        whole["response"] = "".join(p.get("response", "") for p in parts)
        thinking = "".join(p.get("thinking", "") for p in parts)
        if thinking:
            whole["thinking"] = thinking
    logprobs = [lp for p in parts for lp in p.get("logprobs", [])]
    if logprobs:
        whole["logprobs"] = logprobs
    # Field order as Ollama's structs: the text fields before done.
    order = ["model", "created_at", "response", "thinking", "message", "done", "done_reason"]
    return {k: whole[k] for k in order if k in whole} | {k: v for k, v in whole.items() if k not in order}
