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
    session_s: float
    think: bool
    tools: list[Any] = field(default_factory=list)
    fmt: Any = None
    raw: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


def _format(value: Any) -> Any:
    if value in (None, "", "null"):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise BadRequest(400, f'invalid format: {value!r}; expected "json" or a valid JSON Schema object')


def prepare(kind: str, doc: dict[str, Any], info: ModelInfo, keep_alive_default: str) -> Inference:
    """Everything Ollama rejects before scheduling. `info` was already looked up by the model name."""
    session_s = parse_keep_alive(doc.get("keep_alive"), keep_alive_default)
    options = check_options(doc.get("options"))
    model = str(doc.get("model"))
    think_value = parse_think(doc.get("think"))
    if kind == "generate":
        if doc.get("raw") and (doc.get("template") or doc.get("system") or doc.get("context")):
            raise BadRequest(400, "raw mode does not support template, system, or context")
        if info.embedding:
            raise BadRequest(400, f'"{model}" does not support generate')
        if doc.get("suffix"):
            raise BadRequest(400, f"{full_name(info.name)} does not support insert")
        prompt = str(doc.get("prompt") or "")
        system = str(doc.get("system") or "")
        text, last_user, empty = (system + "\n" + prompt if system else prompt), prompt, not prompt
        tools: list[Any] = []
    else:
        messages = doc.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise BadRequest(400, "json: cannot unmarshal messages into Go struct field ChatRequest.messages")
        messages = [m for m in messages or [] if isinstance(m, dict)]
        if info.embedding:
            raise BadRequest(400, f'"{model}" does not support chat')
        tools = doc.get("tools") or []
        if not isinstance(tools, list):
            raise BadRequest(400, "json: cannot unmarshal tools into Go struct field ChatRequest.tools")
        if tools and not info.tools:
            raise BadRequest(400, f"{full_name(info.name)} does not support tools")
        text = "\n".join(f"{str(m.get('role', '')).lower()}: {m.get('content') or ''}" for m in messages)
        last = messages[-1] if messages else {}
        last_user = str(last.get("content") or "") if str(last.get("role", "")).lower() == "user" else ""
        empty = doc.get("messages") == [] or doc.get("messages") is None
    if think_value not in (None, False) and not info.thinking:
        raise BadRequest(400, f'"{model}" does not support thinking')
    top = doc.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or not 0 <= top <= 20):
        raise BadRequest(400, "top_logprobs must be between 0 and 20")
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
        top_logprobs=int(top or 0),
    )
