"""Checks on an inference request, as loose as Ollama's own, plus the bounds an operator set.

Reads the document corral.protocol.body.read_body returns (so it sees the fields the node will see;
the JSON types of struct fields were checked there, as Go's decoder checks them). Ollama has no bounds
on sampling values: temperature 3, top_p 1.5, num_predict -3 and a message without a role all pass, as
do floats for integer options (Options.FromMap in api/types.go truncates them). What Ollama refuses with
an error is refused here too, naming the field; bounds apply only where `Caps` sets them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from corral.domain.errors import InvalidRequest
from corral.protocol.prompts import iter_prompt_texts


class Invalid(InvalidRequest):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", param=field)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Caps:
    """Operator limits: None means no cap."""

    max_predict: int | None = None  # num_predict / max_tokens
    max_ctx: int | None = None  # options.num_ctx
    deny_patterns: tuple[re.Pattern[str], ...] = ()


# Options.FromMap (api/types.go) by json tag, exactly: unknown options are ignored, null is skipped.
_INT_OPTIONS: Final = frozenset(
    {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu", "main_gpu"}
    | {"num_thread", "draft_num_predict"}
)
_FLOAT_OPTIONS: Final = frozenset(
    {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
_BOOL_OPTIONS: Final = frozenset({"use_mmap"})
_OPTIONS_ROUTES: Final = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})
_TOP_LOGPROBS_ROUTES: Final = frozenset({"/api/generate", "/api/chat", "/v1/chat/completions"})
# api.ThinkValue.UnmarshalJSON; openai.thinkFromReasoningEffort.
_THINK_LEVELS: Final = frozenset({"high", "medium", "low", "max"})
_EFFORTS: Final = frozenset({"", "none", "minimal", "low", "medium", "high", "max", "xhigh", "ultra"})
# time.ParseDuration, which api.Duration.UnmarshalJSON uses for a string keep_alive.
_DURATION: Final = re.compile(r"[-+]?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)\Z")
# Where each API family carries the generation limit: (field, read from options).
_PREDICT_FIELDS: Final = {
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
    "/v1/messages": ("max_tokens",),
}
_FLOAT64_MAX: Final = 1.7976931348623157e308


def _is_number(value: Any) -> TypeGuard[int | float]:
    return type(value) is int or type(value) is float


def options(doc: dict[str, Any]) -> dict[str, Any]:
    """The known options with the values Ollama will use (integer options truncated, as Go's int64()
    does); raises Invalid for a value Options.FromMap refuses."""
    raw = doc.get("options")
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        field = f"options.{key}"
        if key in _INT_OPTIONS or key in _FLOAT_OPTIONS:
            if not _is_number(value) or not -_FLOAT64_MAX <= value <= _FLOAT64_MAX or math.isnan(value):
                raise Invalid(field, "must be a number")
            out[key] = int(value) if key in _INT_OPTIONS else value
        elif key in _BOOL_OPTIONS:
            if type(value) is not bool:
                raise Invalid(field, "must be a boolean")
            out[key] = value
        elif key == "stop":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise Invalid(field, "must be an array of strings")
            out[key] = value
    return out


def _openai_content(messages: list[Any]) -> None:
    """openai.FromChatRequest: content is a string or a list of known parts; anything else needs
    tool_calls."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Invalid(f"messages[{i}]", "must be an object")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if isinstance(content, list):
            for j, part in enumerate(content):
                field = f"messages[{i}].content[{j}]"
                if not isinstance(part, dict):
                    raise Invalid(field, "invalid message format: a part must be an object")
                kind = part.get("type")
                if kind == "text" and not isinstance(part.get("text"), str):
                    raise Invalid(field + ".text", "invalid message format: must be a string")
                if kind not in ("text", "image_url", "input_audio"):
                    raise Invalid(field + ".type", "invalid message format: 'text', 'image_url' or 'input_audio'")
        elif "tool_calls" not in message:
            raise Invalid(f"messages[{i}].content", "must be a string or an array of content parts")


def _embed_input(route: str, doc: dict[str, Any]) -> None:
    value = doc.get("input")
    if route == "/v1/embeddings" and (value is None or value == []):
        raise Invalid("input", "invalid input")  # middleware/openai.go EmbeddingsMiddleware
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("input", "invalid input type: a string or an array of strings")  # EmbedHandler


def _fidelity(route: str, doc: dict[str, Any]) -> None:
    """What Ollama refuses after decoding (server/routes.go, middleware/openai.go, openai/openai.go)."""
    if route in _TOP_LOGPROBS_ROUTES:
        top = doc.get("top_logprobs")
        if _is_number(top) and not 0 <= top <= 20:
            raise Invalid("top_logprobs", "must be between 0 and 20")
    if route in _OPTIONS_ROUTES:  # native routes: think and keep_alive are unknown to the /v1 structs
        think = doc.get("think")
        if isinstance(think, str) and think not in _THINK_LEVELS:
            raise Invalid("think", "must be true, false, 'high', 'medium', 'low' or 'max'")
        keep_alive = doc.get("keep_alive")
        if isinstance(keep_alive, str) and not _DURATION.match(keep_alive):
            raise Invalid("keep_alive", "must be a number of seconds or a duration such as '5m'")
    if route == "/v1/chat/completions":
        messages = doc.get("messages")
        if not messages or not isinstance(messages, list):
            raise Invalid("messages", "[] is too short")
        _openai_content(messages)
        reasoning = doc.get("reasoning")
        if isinstance(reasoning, dict):
            field, effort = "reasoning.effort", reasoning.get("effort", "")
        else:
            field, effort = "reasoning_effort", doc.get("reasoning_effort", "")
        if isinstance(effort, str) and effort not in _EFFORTS:
            raise Invalid(field, "must be one of " + ", ".join(sorted(_EFFORTS - {""})))
    elif route == "/v1/completions":
        logprobs = doc.get("logprobs")  # becomes top_logprobs, which GenerateHandler bounds
        if _is_number(logprobs) and logprobs > 20:
            raise Invalid("logprobs", "must be between 0 and 20")
        stop = doc.get("stop")
        if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
            raise Invalid("stop", "invalid type for 'stop' field: an array of strings")
    elif route in ("/api/embed", "/v1/embeddings"):
        _embed_input(route, doc)


def _cap_predict(route: str, doc: dict[str, Any], opts: dict[str, Any], cap: int) -> None:
    checks = [("options.num_predict", opts.get("num_predict"))]
    checks += [(name, doc.get(name)) for name in _PREDICT_FIELDS.get(route, ())]
    for field, value in checks:
        if _is_number(value) and not 0 <= value <= cap:
            raise Invalid(field, f"must be between 0 and {cap} on this gateway")


def validate(route: str, doc: dict[str, Any], caps: Caps) -> None:
    """Raise Invalid (a 400 naming the field) for what Ollama refuses and for what breaks an operator cap."""
    opts = options(doc) if route in _OPTIONS_ROUTES else {}
    _fidelity(route, doc)
    if caps.max_predict is not None:
        _cap_predict(route, doc, opts, caps.max_predict)
    if caps.max_ctx is not None and opts.get("num_ctx", 0) > caps.max_ctx:
        raise Invalid("options.num_ctx", f"must be at most {caps.max_ctx} on this gateway")
    if caps.deny_patterns:
        for text in iter_prompt_texts(doc):
            for pattern in caps.deny_patterns:
                if pattern.search(text):
                    raise Invalid("prompt", "matches a pattern this gateway refuses")
