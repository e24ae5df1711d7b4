"""Request validation for the inference routes: types and bounds of the fields that matter, checked
with pydantic on the parsed body (the bytes forwarded are the client's own, never re-encoded).

Unknown fields and unknown options pass, as Ollama accepts them. Every rejection names the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

Number = StrictInt | float


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class NativeOptions(_Open):
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    min_p: Number | None = Field(None, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    num_predict: StrictInt | None = Field(None, ge=-2)
    num_ctx: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = None
    repeat_penalty: Number | None = Field(None, ge=0)
    stop: StrictStr | list[StrictStr] | None = None


class Message(_Open):
    role: StrictStr
    content: StrictStr | list[Any] | None = None


class NativeChat(_Open):
    model: StrictStr
    messages: list[Message] | None = None
    stream: StrictBool | None = None
    options: NativeOptions | None = None


class NativeGenerate(_Open):
    model: StrictStr
    prompt: StrictStr | None = None
    system: StrictStr | None = None
    stream: StrictBool | None = None
    options: NativeOptions | None = None


class NativeEmbed(_Open):
    model: StrictStr
    options: NativeOptions | None = None


class OpenAIChat(_Open):
    model: StrictStr
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = None
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    n: StrictInt | None = Field(None, ge=1, le=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None


class OpenAICompletion(_Open):
    model: StrictStr
    prompt: StrictStr
    stream: StrictBool | None = None
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    max_tokens: StrictInt | None = Field(None, ge=1)


class OpenAIEmbeddings(_Open):
    model: StrictStr
    input: StrictStr | list[StrictStr]


SCHEMAS: dict[str, type[BaseModel]] = {
    "/api/chat": NativeChat,
    "/api/generate": NativeGenerate,
    "/api/embed": NativeEmbed,
    "/api/embeddings": NativeEmbed,
    "/v1/chat/completions": OpenAIChat,
    "/v1/completions": OpenAICompletion,
    "/v1/embeddings": OpenAIEmbeddings,
}


class Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Caps:
    """Operator limits: None means no cap."""

    max_predict: int | None = None  # num_predict / max_tokens
    max_ctx: int | None = None  # options.num_ctx
    deny_patterns: tuple[re.Pattern[str], ...] = ()


def _field(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "int", "float", "bool", "list[str]", "list[any]") or "[" in str(part):
            continue  # pydantic's union branch names are not fields
        else:
            out += ("." if out else "") + str(part)
    return out or "(body)"


def prompt_texts(doc: dict[str, Any]) -> list[str]:
    texts = [doc[k] for k in ("prompt", "system") if isinstance(doc.get(k), str)]
    messages = doc.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
    return texts


def validate(route: str, doc: dict[str, Any], caps: Caps) -> None:
    """Raise Invalid (naming the field) when the body breaks a type, a bound or an operator cap."""
    schema = SCHEMAS.get(route)
    if schema is None:
        return
    try:
        parsed = schema.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Invalid(_field(first["loc"]), first["msg"]) from None
    options = getattr(parsed, "options", None) if "options" in type(parsed).model_fields else None
    declared = "max_tokens" in type(parsed).model_fields
    if isinstance(options, NativeOptions):
        predict = options.num_predict
    else:
        predict = cast(Any, parsed).max_tokens if declared else None
    field = "options.num_predict" if isinstance(options, NativeOptions) else "max_tokens"
    if caps.max_predict is not None and predict is not None and (predict < 0 or predict > caps.max_predict):
        raise Invalid(field, f"must be between 0 and {caps.max_predict} on this gateway")
    ctx = options.num_ctx if isinstance(options, NativeOptions) else None
    if caps.max_ctx is not None and ctx is not None and ctx > caps.max_ctx:
        raise Invalid("options.num_ctx", f"must be at most {caps.max_ctx} on this gateway")
    if caps.deny_patterns:
        for text in prompt_texts(doc):
            for pattern in caps.deny_patterns:
                if pattern.search(text):
                    raise Invalid("prompt", "matches a pattern this gateway refuses")
