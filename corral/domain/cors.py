"""Which browser origins may call Corral: Ollama's default policy, extended by configuration.

Patterns: `http://localhost` matches that origin on any port; `*` anywhere is a wildcard
(`app://*`, `https://*.example.com`); a lone `*` allows every origin.
"""

from __future__ import annotations

import re
from functools import lru_cache

OLLAMA_DEFAULTS = (
    "http://localhost",
    "https://localhost",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
ALLOW_HEADERS = (
    "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,OpenAI-Beta,X-API-Key,X-Request-ID,"
    "X-Corral-Node,X-Corral-Fanout,X-Session-ID,x-stainless-arch,x-stainless-async,x-stainless-custom-poll-interval,"
    "x-stainless-helper-method,x-stainless-lang,x-stainless-os,x-stainless-package-version,"
    "x-stainless-poll-helper,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,"
    "x-stainless-timeout"
)
MAX_AGE = "43200"


def _compile(pattern: str) -> re.Pattern[str]:
    if "*" in pattern:
        return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")
    # An origin without a port matches it on any port.
    port = "" if re.search(r":\d+$", pattern) else r"(:\d+)?"
    return re.compile("^" + re.escape(pattern.rstrip("/")) + port + "$")


class CorsPolicy:
    def __init__(self, allow_origins: tuple[str, ...]) -> None:
        self.allow_all = "*" in allow_origins
        self._patterns = tuple(_compile(p) for p in allow_origins if p != "*")
        self.allowed = lru_cache(maxsize=1024)(self._allowed)

    def _allowed(self, origin: str) -> bool:
        return self.allow_all or any(p.match(origin) for p in self._patterns)

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.allow_all else origin
