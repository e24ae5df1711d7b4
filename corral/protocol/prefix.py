"""Hashes of a request's conversation prefix, for prompt-cache-aware routing (docs/routing.md).

An Ollama runner keeps each slot's last sequence in its KV cache and, for the next request, takes the
free slot whose cached tokens share the longest prefix with the new prompt, evaluating only the rest
(runner/ollamarunner/cache.go, LoadCacheSlot). So the node that served turn N of a conversation can
answer turn N+1 without evaluating the system prompt and the earlier turns again.

What is hashed, from the document corral.protocol.body already parsed (no second parse, no encoding):

- chat (`/api/chat`, `/v1/chat/completions`): one boundary after each message; the hash at message k
  covers the model, the load-time options, the tools and messages[0..k], chained, so the whole
  history costs one pass;
- generate (`/api/generate`, `/v1/completions`): the system prompt, then the prompt in blocks of
  BLOCK_CHARS characters (a client that sends the whole transcript as one growing prompt shares the
  leading blocks). With `context` (token ids of the previous exchange), Ollama prepends the detokenized
  context to the prompt (server/routes.go, GenerateHandler), so boundaries fall every BLOCK_TOKENS
  tokens of it instead (the system prompt and prompt come after it, and are not a shared prefix).

Only integers are kept, never text. Python's `hash` of a string is a keyed SipHash whose key is drawn
per process, so the values mean nothing outside this process and cannot be aimed at by a client.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from corral.protocol.prompts import BYTES_PER_TOKEN

MAX_BOUNDARIES: Final = 32  # boundaries kept per request: the last ones, where a next turn matches
BLOCK_CHARS: Final = 1024  # a generate prompt is cut in blocks of this many characters
BLOCK_TOKENS: Final = 256  # a generate `context` in blocks of this many token ids
_DEPTH: Final = 8  # nesting followed inside a message (content parts, tool calls)
CHAT_ROUTES: Final = frozenset({"/api/chat", "/v1/chat/completions"})
GENERATE_ROUTES: Final = frozenset({"/api/generate", "/v1/completions"})
ROUTES: Final = CHAT_ROUTES | GENERATE_ROUTES


class Prefix(NamedTuple):
    """`hashes[i]`: the prefix up to a boundary, shortest first (the last MAX_BOUNDARIES of them);
    `tokens[i]`: the prompt tokens before that boundary, estimated (what a cache hit there saves);
    `full`: the boundary the next turn of this conversation will share (None: nothing it can share);
    `first`: the first boundary (the system prompt, or the first message), which other conversations
    of the same application share."""

    hashes: tuple[int, ...]
    tokens: tuple[int, ...]
    full: int | None
    first: int | None


def _freeze(value: Any, depth: int = 0) -> Any:
    """A hashable stand-in for a JSON value (objects as tuples of pairs, in the client's order)."""
    kind = type(value)
    if kind is dict:
        if depth >= _DEPTH:
            return len(value)
        return tuple((k, _freeze(v, depth + 1)) for k, v in value.items())
    if kind is list:
        if depth >= _DEPTH:
            return len(value)
        return tuple([_freeze(v, depth + 1) for v in value])
    return value


def _chars(content: Any) -> int:
    """Characters of a message's text: a string, or the text of its content parts."""
    if type(content) is str:
        return len(content)
    if type(content) is list:
        return sum(len(p["text"]) for p in content if type(p) is dict and type(p.get("text")) is str)
    return 0


def prefix_hashes(route: str, doc: dict[str, Any], model: str, options_key: str = "") -> Prefix | None:
    """The prefix hashes of a request to `route` for `model` (the name it resolved to) with load-time
    options `options_key` (another runner: another cache). None for a route or body without a prompt."""
    if route in CHAT_ROUTES:
        return _chat(doc, model, options_key)
    if route in GENERATE_ROUTES:
        return _generate(doc, model, options_key)
    return None


def _chat(doc: dict[str, Any], model: str, options_key: str) -> Prefix | None:
    messages = doc.get("messages")
    if type(messages) is not list or not messages:
        return None
    tools = doc.get("tools")
    # Templates render the tools ahead of the messages: other tools, another prompt from the start.
    h = hash(("chat", model, options_key, _freeze(tools) if tools else None))
    skip = len(messages) - MAX_BOUNDARIES
    hashes: list[int] = []
    tokens: list[int] = []
    chars = 0
    first = None
    for i, message in enumerate(messages):
        h = hash((h, _freeze(message)))
        first = h if first is None else first
        if type(message) is dict:
            chars += _chars(message.get("content"))
        if i >= skip:
            hashes.append(h)
            tokens.append(chars // BYTES_PER_TOKEN)
    return Prefix(tuple(hashes), tuple(tokens), h, first)


def _generate(doc: dict[str, Any], model: str, options_key: str) -> Prefix | None:
    prompt = doc.get("prompt")
    prompt = prompt if type(prompt) is str else ""
    system = doc.get("system")
    system = system if type(system) is str else ""
    context = doc.get("context")
    # raw and template change what the prompt renders to.
    h = hash(("generate", model, options_key, doc.get("raw") is True, doc.get("template")))
    hashes: list[int] = []
    tokens: list[int] = []
    if type(context) is list and context:
        whole = len(context) - len(context) % BLOCK_TOKENS
        for start in range(0, whole, BLOCK_TOKENS):
            h = hash((h, tuple(context[start : start + BLOCK_TOKENS])))
            hashes.append(h)
            tokens.append(start + BLOCK_TOKENS)
        # The next turn's context begins with this one: its last whole block is what they share.
        full = hashes[-1] if hashes else None
    else:
        chars = len(system)
        if system:
            h = hash((h, "system", system))
            hashes.append(h)
            tokens.append(chars // BYTES_PER_TOKEN)
        whole = len(prompt) - len(prompt) % BLOCK_CHARS
        for start in range(0, whole, BLOCK_CHARS):
            h = hash((h, prompt[start : start + BLOCK_CHARS]))
            hashes.append(h)
            tokens.append((chars + start + BLOCK_CHARS) // BYTES_PER_TOKEN)
        full = hashes[-1] if hashes else None
    if not hashes:
        return None  # a short prompt: no boundary a next request could share
    return Prefix(tuple(hashes[-MAX_BOUNDARIES:]), tuple(tokens[-MAX_BOUNDARIES:]), full, hashes[0])
