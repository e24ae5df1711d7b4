"""Ollama model-name equivalence: `m`, `m:latest` and `registry.ollama.ai/library/m:latest` are one model."""

from __future__ import annotations

from functools import lru_cache

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


@lru_cache(maxsize=4096)
def normalize(name: str) -> str:
    """The canonical, case-folded key of a model name: `[host/][namespace/]model:tag` with defaults
    dropped, so that every spelling of one model maps to one key (e.g. `llama3.2:latest`)."""
    name = name.strip().lower()
    if not name:
        return ""
    tag = DEFAULT_TAG
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        base, _, tag = name.rpartition(":")
        tag = tag or DEFAULT_TAG
    else:
        base = name
    parts = base.split("/")
    if len(parts) == 3 and parts[0] == DEFAULT_HOST:
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == DEFAULT_NAMESPACE:
        parts = parts[1:]
    return "/".join(parts) + ":" + tag


def display(name: str) -> str:
    """The shortest display form with the tag, as `/api/tags` shows it."""
    return normalize(name)
