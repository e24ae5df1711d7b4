"""The request structs Ollama decodes each route's body into, field by field (json tag and Go type).

Mirrors api/types.go (native routes), openai/openai.go (/v1 chat, completions, embeddings),
openai/responses.go (/v1/responses) and anthropic/anthropic.go (/v1/messages) at Ollama's main branch.
Types Corral never reads are kept as Raw (json.RawMessage, or a type with its own UnmarshalJSON).
The Responses and Anthropic item types are decoded by hand-written UnmarshalJSON methods that pick a
struct by the item's "type"; here one struct holds the union of their fields.
"""

from __future__ import annotations

from typing import Any

from corral.protocol.gojson import Slice, Struct
from corral.protocol.gotypes import AnyValue, Bytes, Map, OneOf, Raw, Scalar

STR = Scalar("string")
BOOL = Scalar("bool")
INT = Scalar("int")
F32 = Scalar("float32")
P_BOOL = Scalar("bool", ptr=True)
P_INT = Scalar("int", ptr=True)
P_STR = Scalar("string", ptr=True)
P_F64 = Scalar("float64", ptr=True)
P_F32 = Scalar("float32", ptr=True)
ANY = AnyValue()
RAW = Raw()
MAP = Map()
STRINGS = Slice(STR)
INTS = Slice(INT)
# api.Duration.UnmarshalJSON: seconds as a number, or a Go duration string.
DURATION = Raw((int, float, str), "a number of seconds or a duration string", ptr=True)
# api.ThinkValue.UnmarshalJSON: true/false or "high" | "medium" | "low" | "max".
THINK = Raw((bool, str), "a boolean or a string", ptr=True)


def _lower_role(message: dict[str, Any]) -> None:
    # api.Message.UnmarshalJSON lower-cases the role after decoding.
    role = message.get("role")
    if isinstance(role, str) and not role.islower():
        message["role"] = role.lower()


# api/types.go

TOOL_FUNCTION = Struct(
    "ToolFunction",
    {
        "name": STR,
        "description": STR,
        "parameters": Struct(
            "ToolFunctionParameters",
            {"type": STR, "$defs": ANY, "items": ANY, "required": STRINGS, "properties": Raw(ptr=True)},
        ),
    },
)
TOOLS = Slice(Struct("Tool", {"type": STR, "items": ANY, "function": TOOL_FUNCTION}))
TOOL_CALLS = Slice(
    Struct(
        "ToolCall",
        {
            "id": STR,
            "function": Struct("ToolCallFunction", {"index": INT, "name": STR, "arguments": RAW}),
        },
    )
)
MESSAGE = Struct(
    "Message",
    {
        "role": STR,
        "content": STR,
        "thinking": STR,
        "images": Slice(Bytes()),
        "tool_calls": TOOL_CALLS,
        "tool_name": STR,
        "tool_call_id": STR,
    },
    replace=True,
    after=_lower_role,
)
MESSAGES = Slice(MESSAGE)
_COMMON = {"model": STR, "stream": P_BOOL, "format": RAW, "keep_alive": DURATION, "options": MAP, "think": THINK}
_RUN = {"truncate": P_BOOL, "shift": P_BOOL, "_debug_render_only": BOOL, "logprobs": BOOL, "top_logprobs": INT}

GENERATE = Struct(
    "GenerateRequest",
    {
        **_COMMON,
        **_RUN,
        "prompt": STR,
        "suffix": STR,
        "system": STR,
        "template": STR,
        "context": INTS,
        "raw": BOOL,
        "images": Slice(Bytes()),
    },
)
CHAT = Struct("ChatRequest", {**_COMMON, **_RUN, "messages": MESSAGES, "tools": TOOLS})
EMBED = Struct(
    "EmbedRequest",
    {"model": STR, "input": ANY, "keep_alive": DURATION, "truncate": P_BOOL, "dimensions": INT, "options": MAP},
)
EMBEDDINGS = Struct("EmbeddingRequest", {"model": STR, "prompt": STR, "keep_alive": DURATION, "options": MAP})
SHOW = Struct(
    "ShowRequest",
    {"model": STR, "system": STR, "template": STR, "verbose": BOOL, "options": MAP, "name": STR},
)
_TRANSFER = {"model": STR, "insecure": BOOL, "username": STR, "password": STR, "stream": P_BOOL, "name": STR}
PULL = Struct("PullRequest", _TRANSFER)
PUSH = Struct("PushRequest", _TRANSFER)
DELETE = Struct("DeleteRequest", {"model": STR, "name": STR})
COPY = Struct("CopyRequest", {"source": STR, "destination": STR})
CREATE = Struct(
    "CreateRequest",
    {
        **{k: STR for k in ("model", "quantize", "draft_quantize", "from", "remote_host", "template", "system")},
        **{k: STR for k in ("renderer", "parser", "requires", "name", "quantization")},
        "stream": P_BOOL,
        "files": MAP,
        "draft_files": MAP,
        "adapters": MAP,
        "license": ANY,
        "parameters": MAP,
        "messages": MESSAGES,
        "info": MAP,
    },
)

# openai/openai.go

STREAM_OPTIONS = Struct("StreamOptions", {"include_usage": BOOL}, ptr=True)
OPENAI_TOOL_CALLS = Slice(
    Struct(
        "ToolCall",
        {
            "id": STR,
            "index": INT,
            "type": STR,
            "function": Struct("Function", {"name": STR, "arguments": STR}),
        },
    )
)
OPENAI_MESSAGE = Struct(
    "Message",
    {
        "role": STR,
        "content": ANY,
        "reasoning": STR,
        "tool_calls": OPENAI_TOOL_CALLS,
        "name": STR,
        "tool_call_id": STR,
    },
)
CHAT_COMPLETION = Struct(
    "ChatCompletionRequest",
    {
        "model": STR,
        "messages": Slice(OPENAI_MESSAGE),
        "stream": BOOL,
        "stream_options": STREAM_OPTIONS,
        "max_tokens": P_INT,
        "seed": P_INT,
        "stop": ANY,
        "temperature": P_F64,
        "frequency_penalty": P_F64,
        "presence_penalty": P_F64,
        "top_p": P_F64,
        "response_format": Struct(
            "ResponseFormat",
            {"type": STR, "json_schema": Struct("JsonSchema", {"schema": RAW}, ptr=True)},
            ptr=True,
        ),
        "tools": TOOLS,
        "reasoning": Struct("Reasoning", {"effort": STR}, ptr=True),
        "reasoning_effort": P_STR,
        "logprobs": P_BOOL,
        "top_logprobs": INT,
        "_debug_render_only": BOOL,
    },
)
COMPLETION = Struct(
    "CompletionRequest",
    {
        "model": STR,
        "prompt": STR,
        "frequency_penalty": F32,
        "max_tokens": P_INT,
        "presence_penalty": F32,
        "seed": P_INT,
        "stop": ANY,
        "stream": BOOL,
        "stream_options": STREAM_OPTIONS,
        "temperature": P_F32,
        "top_p": F32,
        "suffix": STR,
        "logprobs": P_INT,
        "_debug_render_only": BOOL,
    },
)
OPENAI_EMBED = Struct("EmbedRequest", {"input": ANY, "model": STR, "dimensions": INT, "encoding_format": STR})

# openai/responses.go: ResponsesInput and its items decode through UnmarshalJSON into fresh values.

_RESPONSES_CONTENT = Slice(
    Struct(
        "ResponsesContent",
        {k: STR for k in ("type", "text", "detail", "file_id", "image_url", "file_data", "file_url", "filename")},
        replace=True,
    )
)
_RESPONSES_ITEM = Struct(
    "ResponsesInputItem",
    {
        **{k: STR for k in ("type", "role", "id", "call_id", "name", "arguments", "encrypted_content", "status")},
        "content": OneOf(_RESPONSES_CONTENT),
        "output": OneOf(_RESPONSES_CONTENT),
        "summary": RAW,
        "action": RAW,
    },
    replace=True,
)
RESPONSES = Struct(
    "ResponsesRequest",
    {
        "model": STR,
        "background": BOOL,
        "conversation": RAW,
        "include": STRINGS,
        "input": OneOf(Slice(_RESPONSES_ITEM)),
        "instructions": STR,
        "max_output_tokens": P_INT,
        "reasoning": Struct("ResponsesReasoning", {"effort": STR, "generate_summary": STR, "summary": STR}),
        "temperature": P_F64,
        "text": RAW,
        "top_p": P_F64,
        "truncation": P_STR,
        "tools": RAW,
        "stream": P_BOOL,
    },
)

# anthropic/anthropic.go: MessageParam.UnmarshalJSON takes a string or an array of ContentBlock.

_CONTENT_BLOCK = Struct(
    "ContentBlock",
    {
        "type": STR,
        "text": P_STR,
        "citations": RAW,
        "source": RAW,
        "id": STR,
        "name": STR,
        "input": RAW,
        "tool_use_id": STR,
        "content": ANY,
        "is_error": BOOL,
        "thinking": P_STR,
        "signature": STR,
    },
)
ANTHROPIC_MESSAGES = Struct(
    "MessagesRequest",
    {
        "model": STR,
        "max_tokens": INT,
        "messages": Slice(Struct("MessageParam", {"role": STR, "content": OneOf(Slice(_CONTENT_BLOCK))}, replace=True)),
        "system": ANY,
        "stream": BOOL,
        "temperature": P_F64,
        "top_p": P_F64,
        "top_k": P_INT,
        "stop_sequences": STRINGS,
        "tools": RAW,
        "tool_choice": RAW,
        "thinking": Struct("ThinkingConfig", {"type": STR, "budget_tokens": INT}, ptr=True),
        "metadata": Struct("Metadata", {"user_id": STR}, ptr=True),
        "output_config": Struct("OutputConfig", {"effort": STR}, ptr=True),
    },
)

# The struct each route's body is decoded into (server/routes.go registers the handlers).
ROUTES: dict[str, Struct] = {
    "/api/generate": GENERATE,
    "/api/chat": CHAT,
    "/api/embed": EMBED,
    "/api/embeddings": EMBEDDINGS,
    "/api/show": SHOW,
    "/api/pull": PULL,
    "/api/push": PUSH,
    "/api/delete": DELETE,
    "/api/copy": COPY,
    "/api/create": CREATE,
    "/v1/chat/completions": CHAT_COMPLETION,
    "/v1/completions": COMPLETION,
    "/v1/embeddings": OPENAI_EMBED,
    "/v1/responses": RESPONSES,
    "/v1/messages": ANTHROPIC_MESSAGES,
}
