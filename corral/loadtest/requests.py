"""What the load generator sends: the target parsed from `--url`, the prompts, and every request
encoded once up front (head and body as one bytes object), so sending one costs a single write.

Chat is the workload: Ollama's `/api/chat` (native) or `/v1/chat/completions` (OpenAI). Pure but for
reading the prompts file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

DEFAULT_PROMPT = "Why is the sky blue? Answer in one paragraph."
APIS = ("ollama", "openai")


@dataclass(frozen=True)
class Target:
    api: str
    host: str
    port: int
    tls: bool
    path: str  # the chat route, with any prefix the URL carried

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The URL requests go to."""
        return f"{'https' if self.tls else 'http'}://{self.host_header}{self.path}"


def parse_target(url: str, api: str) -> Target:
    """`--url` is the server's base URL, as a client takes it (`http://host:11434`; for OpenAI also
    `http://host:8000/v1`). Raises ValueError naming what is wrong."""
    if api not in APIS:
        raise ValueError(f"--api must be one of {', '.join(APIS)}, not {api!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"--url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--url must start with http:// or https://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"--url {url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"--url {url!r} must be a base URL, without a query or fragment")
    prefix = parts.path.rstrip("/")
    if api == "openai":
        path = prefix + ("/chat/completions" if prefix.endswith("/v1") else "/v1/chat/completions")
    else:
        path = prefix + "/api/chat"
    tls = parts.scheme == "https"
    return Target(api, parts.hostname, port or (443 if tls else 80), tls, path)


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None = None


def read_prompts(path: Path) -> list[Prompt]:
    """One prompt per line: plain text, or a JSON object with `prompt` (text) or `messages` (a chat) and
    optionally `max_tokens`. Blank lines are skipped. Raises ValueError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--prompts {path}: cannot read it ({exc})") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            prompts.append(_json_prompt(path, number, line))
        else:
            prompts.append(Prompt(({"role": "user", "content": line},)))
    if not prompts:
        raise ValueError(f"--prompts {path}: the file has no prompts")
    return prompts


def _json_prompt(path: Path, number: int, line: str) -> Prompt:
    where = f"--prompts {path}, line {number}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(obj.get("prompt"), str):
        messages: tuple[dict[str, Any], ...] = ({"role": "user", "content": obj["prompt"]},)
    elif (
        isinstance(obj.get("messages"), list) and obj["messages"] and all(isinstance(m, dict) for m in obj["messages"])
    ):
        messages = tuple(obj["messages"])
    else:
        raise ValueError(f"{where}: needs 'prompt' (a string) or 'messages' (a non-empty list of objects)")
    limit = obj.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"{where}: 'max_tokens' must be a positive integer")
    return Prompt(messages, limit)


def body(api: str, model: str, prompt: Prompt, stream: bool, max_tokens: int | None) -> dict[str, Any]:
    limit = prompt.max_tokens if prompt.max_tokens is not None else max_tokens
    doc: dict[str, Any] = {"model": model, "messages": list(prompt.messages), "stream": stream}
    if api == "ollama":
        if limit is not None:
            doc["options"] = {"num_predict": limit}
    else:
        if limit is not None:
            doc["max_tokens"] = limit
        if stream:
            doc["stream_options"] = {"include_usage": True}  # the server's own token count at the end
    return doc


def encode_requests(
    target: Target,
    models: list[str],
    prompts: list[Prompt],
    *,
    stream: bool,
    key: str | None = None,
    max_tokens: int | None = None,
) -> list[bytes]:
    """Every (model, prompt) request, ready to write; sent in turn, models alternating fastest."""
    head = [
        f"POST {target.path} HTTP/1.1",
        f"host: {target.host_header}",
        "content-type: application/json",
        "accept: application/x-ndjson" if stream and target.api == "ollama" else "accept: */*",
        "user-agent: corral-loadtest",
    ]
    if key:
        head.append(f"authorization: Bearer {key}")
    start = ("\r\n".join(head) + "\r\n").encode("latin-1")
    out = []
    for prompt in prompts:
        for model in models:
            data = orjson.dumps(body(target.api, model, prompt, stream, max_tokens))
            out.append(start + b"content-length: %d\r\n\r\n" % len(data) + data)
    return out
