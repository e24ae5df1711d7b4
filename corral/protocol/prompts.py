"""The prompt-bearing text of a request, read from the document corral.protocol.body returns: what
deny patterns are matched against, what the admission estimate counts, what the audit fingerprints.

Covers every route's fields that reach the model's prompt: native prompt, suffix, system, template,
messages (content, thinking) and tool descriptions (api/types.go); /v1 content parts
([{"type": "text", "text": ...}], openai/openai.go), completions' suffix; the Responses API's input and
instructions (openai/responses.go); Anthropic's system and content blocks, tool results included
(anthropic/anthropic.go); embedding inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

_TEXT_KEYS: Final = ("prompt", "suffix", "system", "template", "instructions", "input")
_MESSAGE_KEYS: Final = ("content", "thinking", "reasoning")
_PART_KEYS: Final = ("text", "content", "output", "thinking")
BYTES_PER_TOKEN: Final = 4  # a common rule of thumb for English text and BPE vocabularies


def _parts(value: Any, depth: int = 0) -> Iterator[str]:
    """Text in a string, or in a list of content parts / blocks / items (nested tool results too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list) and depth < 4:
        for part in value:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict):
                for key in _PART_KEYS:
                    if key in part:
                        yield from _parts(part[key], depth + 1)


def iter_prompt_texts(doc: dict[str, Any]) -> Iterator[str]:
    for key in _TEXT_KEYS:
        if key in doc:
            yield from _parts(doc[key])
    messages = doc.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                for key in _MESSAGE_KEYS:
                    if key in message:
                        yield from _parts(message[key])
    tools = doc.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                function = tool.get("function")
                described = function if isinstance(function, dict) else tool
                if isinstance(described.get("description"), str):
                    yield described["description"]


def prompt_texts(doc: dict[str, Any]) -> list[str]:
    return list(iter_prompt_texts(doc))


def prompt_text(doc: dict[str, Any]) -> str:
    """The prompt as one string (for the audit fingerprint)."""
    return "\n".join(iter_prompt_texts(doc))


def estimated_prompt_tokens(doc: dict[str, Any]) -> int:
    """A cheap estimate of the prompt's tokens for admission: characters / 4, at least 1."""
    return max(1, sum(map(len, iter_prompt_texts(doc))) // BYTES_PER_TOKEN)


# Where each API family carries the client's cap on generated tokens (api/types.go Options.NumPredict;
# openai/openai.go, openai/responses.go, anthropic/anthropic.go).
_OUTPUT_CAPS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
EMBED_ROUTES: Final = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings"})
DEFAULT_OUTPUT_TOKENS: Final = 256  # expected output when the client sets no cap (routing's prior)


def expected_output_tokens(doc: dict[str, Any], route: str) -> int:
    """Tokens the request is expected to generate, for routing's work estimate: none for an embedding,
    the client's cap (num_predict, max_tokens...) when it set a positive one, else a prior. Never an
    error: validation has already judged the fields."""
    if route in EMBED_ROUTES:
        return 0
    options = doc.get("options")
    value = options.get("num_predict") if isinstance(options, dict) else None
    if value is None:
        value = next((doc[k] for k in _OUTPUT_CAPS if doc.get(k) is not None), None)
    if (type(value) is int or type(value) is float) and value > 0:
        return min(int(value), 1 << 20)
    return DEFAULT_OUTPUT_TOKENS  # -1 / -2 mean no limit natively: the prior, not infinity
