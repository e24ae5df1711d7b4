"""Native Ollama chat/generate ⇄ the OpenAI API, for OpenAI-type nodes (vLLM, llama.cpp, LM Studio).

Requests go out in OpenAI's shape (translate_request); answers come back in Ollama's native shapes
(translate_stream: SSE → NDJSON, whole JSON, errors). All of it is pure: no I/O, no clock reads.
"""

from corral.protocol.translate_native import (
    error_line,
    native_json,
    openai_error_to_native,
    openai_response_to_native,
    rfc3339,
)
from corral.protocol.translate_request import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    chat_request_to_openai,
    generate_request_to_openai,
)
from corral.protocol.translate_stream import SseToNdjson

__all__ = [
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "SseToNdjson",
    "chat_request_to_openai",
    "error_line",
    "generate_request_to_openai",
    "native_json",
    "openai_error_to_native",
    "openai_response_to_native",
    "rfc3339",
]
