"""The request structs Ollama decodes each route's body into, described for gojson.

Field names, Go types and type names follow api/types.go (native routes), openai/openai.go and
openai/responses.go (`/v1`), and anthropic/anthropic.go (`/v1/messages`). Only what the decoder
needs is here: a field's JSON name, its Go type and how Go prints that type in errors.
"""

from __future__ import annotations

from corral.sim.anthropic import MESSAGE_PARAM
from corral.sim.gojson import (
    ANY,
    BOOL,
    FLOAT32,
    FLOAT64,
    INT,
    MAP,
    RAW,
    STRING,
    GoType,
    custom,
    ptr,
    slice_of,
    struct,
)
from corral.sim.params import check_keep_alive, parse_think
from corral.sim.responses import INPUT

STRINGS = slice_of(STRING)
# api.Duration and api.ThinkValue have their own UnmarshalJSON (api/types.go), behind pointers.
KEEP_ALIVE = ptr(custom("api.Duration", check_keep_alive))
THINK = ptr(custom("api.ThinkValue", parse_think))
IMAGES = slice_of(GoType("bytes", "api.ImageData"))

TOOL_CALL = struct(
    "api.ToolCall",
    {
        "id": STRING,
        "function": struct(
            "api.ToolCallFunction",
            {"index": INT, "name": STRING, "arguments": ANY},  # an ordered map
        ),
    },
)
TOOL = struct(
    "api.Tool",
    {
        "type": STRING,
        "items": ANY,
        "function": struct(
            "api.ToolFunction",
            {
                "name": STRING,
                "description": STRING,
                "parameters": struct(
                    "api.ToolFunctionParameters",
                    {"type": STRING, "$defs": ANY, "items": ANY, "required": STRINGS, "properties": ANY},
                ),
            },
        ),
    },
)
# Message.UnmarshalJSON decodes through a local `Alias` type and lower-cases the role.
MESSAGE = struct(
    "api.Message",
    {
        "role": STRING,
        "content": STRING,
        "thinking": STRING,
        "images": IMAGES,
        "tool_calls": slice_of(TOOL_CALL),
        "tool_name": STRING,
        "tool_call_id": STRING,
    },
    alias="api.Alias",
    lower=("role",),
)
_COMMON: dict[str, GoType] = {
    "model": STRING,
    "stream": ptr(BOOL),
    "format": RAW,
    "keep_alive": KEEP_ALIVE,
    "options": MAP,
    "think": THINK,
    "truncate": ptr(BOOL),
    "shift": ptr(BOOL),
    "_debug_render_only": BOOL,
    "logprobs": BOOL,
    "top_logprobs": INT,
}
GENERATE = struct(
    "api.GenerateRequest",
    {
        **_COMMON,
        "prompt": STRING,
        "suffix": STRING,
        "system": STRING,
        "template": STRING,
        "context": slice_of(INT),
        "raw": BOOL,
        "images": IMAGES,
    },
)
CHAT = struct("api.ChatRequest", {**_COMMON, "messages": slice_of(MESSAGE), "tools": slice_of(TOOL, "api.Tools")})
EMBED = struct(
    "api.EmbedRequest",
    {
        "model": STRING,
        "input": ANY,
        "keep_alive": KEEP_ALIVE,
        "truncate": ptr(BOOL),
        "dimensions": INT,
        "options": MAP,
    },
)
EMBEDDINGS = struct(
    "api.EmbeddingRequest", {"model": STRING, "prompt": STRING, "keep_alive": KEEP_ALIVE, "options": MAP}
)
SHOW = struct(
    "api.ShowRequest",
    {"model": STRING, "system": STRING, "template": STRING, "verbose": BOOL, "options": MAP, "name": STRING},
)
PULL = struct(
    "api.PullRequest",
    {
        "model": STRING,
        "insecure": BOOL,
        "username": STRING,
        "password": STRING,
        "stream": ptr(BOOL),
        "name": STRING,
    },
)
PUSH = struct("api.PushRequest", PULL.fields)
CREATE = struct(
    "api.CreateRequest",
    {
        "model": STRING,
        "stream": ptr(BOOL),
        "quantize": STRING,
        "from": STRING,
        "files": GoType("map", "map[string]string"),
        "adapters": GoType("map", "map[string]string"),
        "template": STRING,
        "license": ANY,
        "system": STRING,
        "parameters": MAP,
        "messages": slice_of(MESSAGE),
        "name": STRING,
        "quantization": STRING,
    },
)
COPY = struct("api.CopyRequest", {"source": STRING, "destination": STRING})
DELETE = struct("api.DeleteRequest", {"model": STRING, "name": STRING})

# openai/openai.go
_JSON_SCHEMA = ptr(struct("openai.JsonSchema", {"schema": RAW}))
_STREAM_OPTIONS = ptr(struct("openai.StreamOptions", {"include_usage": BOOL}))
OPENAI_CHAT = struct(
    "openai.ChatCompletionRequest",
    {
        "model": STRING,
        "messages": slice_of(
            struct(
                "openai.Message",
                {
                    "role": STRING,
                    "content": ANY,
                    "reasoning": STRING,
                    "tool_calls": ANY,
                    "name": STRING,
                    "tool_call_id": STRING,
                },
            )
        ),
        "stream": BOOL,
        "stream_options": _STREAM_OPTIONS,
        "max_tokens": ptr(INT),
        "seed": ptr(INT),
        "stop": ANY,
        "temperature": ptr(FLOAT64),
        "frequency_penalty": ptr(FLOAT64),
        "presence_penalty": ptr(FLOAT64),
        "top_p": ptr(FLOAT64),
        "response_format": ptr(
            struct(
                "openai.ResponseFormat",
                {"type": STRING, "json_schema": ptr(struct("openai.JsonSchema", {"schema": RAW}))},
            )
        ),
        "tools": slice_of(TOOL),
        "reasoning": ptr(struct("openai.Reasoning", {"effort": STRING})),
        "reasoning_effort": ptr(STRING),
        "logprobs": ptr(BOOL),
        "top_logprobs": INT,
        "_debug_render_only": BOOL,
    },
)
OPENAI_COMPLETION = struct(
    "openai.CompletionRequest",
    {
        "model": STRING,
        "prompt": STRING,
        "frequency_penalty": FLOAT32,
        "max_tokens": ptr(INT),
        "presence_penalty": FLOAT32,
        "seed": ptr(INT),
        "stop": ANY,
        "stream": BOOL,
        "stream_options": _STREAM_OPTIONS,
        "temperature": ptr(FLOAT32),
        "top_p": FLOAT32,
        "suffix": STRING,
        "logprobs": ptr(INT),
        "_debug_render_only": BOOL,
    },
)
OPENAI_EMBED = struct(
    "openai.EmbedRequest", {"input": ANY, "model": STRING, "dimensions": INT, "encoding_format": STRING}
)

# openai/responses.go. `input` has its own UnmarshalJSON (a string or an array of typed items).
_RESPONSES_TOOL = struct(
    "openai.ResponsesTool",
    {"type": STRING, "name": STRING, "description": ptr(STRING), "strict": ptr(BOOL), "parameters": MAP, "tools": ANY},
)
RESPONSES = struct(
    "openai.ResponsesRequest",
    {
        "model": STRING,
        "background": BOOL,
        "conversation": RAW,
        "include": STRINGS,
        "input": INPUT,
        "instructions": STRING,
        "max_output_tokens": ptr(INT),
        "reasoning": struct(
            "openai.ResponsesReasoning", {"effort": STRING, "generate_summary": STRING, "summary": STRING}
        ),
        "temperature": ptr(FLOAT64),
        "text": ptr(
            struct(
                "openai.ResponsesText",
                {
                    "format": ptr(
                        struct(
                            "openai.ResponsesTextFormat",
                            {"type": STRING, "name": STRING, "schema": RAW, "strict": ptr(BOOL)},
                        )
                    )
                },
            )
        ),
        "top_p": ptr(FLOAT64),
        "truncation": ptr(STRING),
        "tools": slice_of(_RESPONSES_TOOL),
        "stream": ptr(BOOL),
    },
)

# anthropic/anthropic.go. MessageParam has its own UnmarshalJSON (content: a string or blocks).
ANTHROPIC_MESSAGES = struct(
    "anthropic.MessagesRequest",
    {
        "model": STRING,
        "max_tokens": INT,
        "messages": slice_of(MESSAGE_PARAM),
        "system": ANY,
        "stream": BOOL,
        "temperature": ptr(FLOAT64),
        "top_p": ptr(FLOAT64),
        "top_k": ptr(INT),
        "stop_sequences": STRINGS,
        "tools": slice_of(
            struct(
                "anthropic.Tool",
                {"type": STRING, "name": STRING, "description": STRING, "input_schema": RAW, "max_uses": INT},
            )
        ),
        "tool_choice": ANY,
        "thinking": ptr(struct("anthropic.ThinkingConfig", {"type": STRING, "budget_tokens": INT})),
        "metadata": ANY,
        "output_config": ptr(struct("anthropic.OutputConfig", {"effort": STRING})),
    },
)

BY_PATH: dict[str, GoType] = {
    "/api/generate": GENERATE,
    "/api/chat": CHAT,
    "/api/embed": EMBED,
    "/api/embeddings": EMBEDDINGS,
    "/api/show": SHOW,
    "/api/pull": PULL,
    "/api/push": PUSH,
    "/api/create": CREATE,
    "/api/copy": COPY,
    "/api/delete": DELETE,
    "/v1/chat/completions": OPENAI_CHAT,
    "/v1/completions": OPENAI_COMPLETION,
    "/v1/embeddings": OPENAI_EMBED,
    "/v1/responses": RESPONSES,
    "/v1/messages": ANTHROPIC_MESSAGES,
}
