"""Validation of native generate/chat requests, in the order Ollama's handlers check (ollama-api.md §3.1-3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.sim.catalog import ModelInfo, full_name
from corral.sim.params import check_options, load_key, parse_keep_alive, parse_think
from corral.sim.scheduler import LoadKey
from corral.sim.wire import BadRequest


@dataclass
class Inference:
    kind: str  # "generate" or "chat"
    model: str  # as the client spelled it; responses echo it
    info: ModelInfo
    prompt: str  # the text the answer is derived from
    last_user: str
    empty: bool  # no prompt / messages: [] → load or unload
    options: dict[str, Any]
    key: LoadKey
    session_s: float | None  # None: no keep_alive sent (a loaded runner keeps its own)
    think: bool
    tools: list[Any] = field(default_factory=list)
    fmt: Any = None
    raw: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    context: list[int] = field(default_factory=list)  # /api/generate's tokens from an earlier answer
    continues: bool = False  # a chat whose last message is the assistant's: no new assistant header


def _format(value: Any) -> Any:
    if value in (None, "", "null"):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise BadRequest(400, f'invalid format: {value!r}; expected "json" or a valid JSON Schema object')


def check_top_logprobs(doc: dict[str, Any]) -> None:
    """The handlers' first check after decoding (server/routes.go)."""
    if not 0 <= int(doc.get("top_logprobs") or 0) <= 20:
        raise BadRequest(400, "top_logprobs must be between 0 and 20")


def unload_requested(kind: str, doc: dict[str, Any], keep_alive_default: str) -> bool:
    """An empty prompt (or no messages) with keep_alive 0: what `ollama stop` sends. GenerateHandler
    and ChatHandler (server/routes.go) expire the runner and answer before any capability check,
    so this works for an embedding model too."""
    if doc.get("keep_alive") is None:
        return False
    empty = not doc.get("prompt") if kind == "generate" else not doc.get("messages")
    return empty and parse_keep_alive(doc["keep_alive"], keep_alive_default) == 0


def prepare(
    kind: str, doc: dict[str, Any], info: ModelInfo, keep_alive_default: str, relax_thinking: bool = False
) -> Inference:
    """Everything Ollama rejects before scheduling, in its order (server/routes.go): raw mode,
    thinking, then scheduleRunner's capability check, then the options (Options.FromMap, a 500).
    `relax_thinking` is the Anthropic route's: `think` on a model without thinking is dropped."""
    keep_alive = doc.get("keep_alive")
    session_s = None if keep_alive is None else parse_keep_alive(keep_alive, keep_alive_default)
    model = str(doc.get("model"))
    think_value = parse_think(doc.get("think"))
    if kind == "generate" and doc.get("raw") and (doc.get("template") or doc.get("system") or doc.get("context")):
        raise BadRequest(400, "raw mode does not support template, system, or context")
    if think_value not in (None, False) and not info.thinking:
        if not relax_thinking:
            raise BadRequest(400, f'"{model}" does not support thinking')
        think_value = None
    if kind == "generate":
        if info.embedding:
            raise BadRequest(400, f'"{model}" does not support generate')
        if doc.get("suffix"):
            raise BadRequest(400, f"{full_name(info.name)} does not support insert")
        prompt = str(doc.get("prompt") or "")
        system = str(doc.get("system") or "")
        text, last_user, empty = (system + "\n" + prompt if system else prompt), prompt, not prompt
        tools: list[Any] = []
        context = [x if isinstance(x, int) else 0 for x in doc.get("context") or []]  # Go: null is 0
        continues = False
    else:
        messages = [m for m in doc.get("messages") or [] if isinstance(m, dict)]
        if info.embedding:
            raise BadRequest(400, f'"{model}" does not support chat')
        tools = doc.get("tools") or []
        if tools and not info.tools:
            raise BadRequest(400, f"{full_name(info.name)} does not support tools")
        text = "\n".join(f"{m.get('role') or ''}: {m.get('content') or ''}" for m in messages)
        last = messages[-1] if messages else {}
        last_user = str(last.get("content") or "") if last.get("role") == "user" else ""
        empty = not messages
        context, continues = [], last.get("role") == "assistant"
    options = check_options(doc.get("options"))
    return Inference(
        kind=kind,
        model=model,
        info=info,
        prompt=text,
        last_user=last_user,
        empty=empty,
        options=options,
        key=load_key(options, info.context_length),
        session_s=session_s,
        # A thinking model thinks unless told not to (routes.go sets think=true when it is omitted).
        think=info.thinking and think_value is not False,
        tools=tools,
        fmt=_format(doc.get("format")),
        raw=bool(doc.get("raw")),
        logprobs=bool(doc.get("logprobs")),
        top_logprobs=int(doc.get("top_logprobs") or 0),
        context=context,
        continues=continues,
    )
