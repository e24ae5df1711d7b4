"""Settings of one simulated Ollama node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

# Model specs may carry flags after "=": "my-encoder=embed", "tiny:1b=notools,think".
MODEL_FLAGS = ("embed", "think", "nothink", "tools", "notools", "vision")


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 11434
    models: list[str] = field(default_factory=lambda: ["llama3.2:1b"])
    tokens_per_second: float = 50.0
    # Prompt tokens an embedding model encodes per second (one runner, one batch at a time); unset: 20×
    # tokens_per_second. A small encoder on a GPU does thousands.
    embed_tokens_per_second: float | None = None
    # Prompt tokens a runner evaluates per second. Set: the first token waits for the uncached prompt
    # tokens at this rate. Unset: no wait, and prompt_eval_duration reports them at 20× tokens_per_second.
    prompt_eval_rate: float | None = None
    # OLLAMA_MULTIUSER_CACHE of the runners before v0.30: slots chosen by findBestCacheSlot, not as
    # llama-server chooses them (corral/sim/prompt_cache.py).
    multiuser_cache: bool = False
    load_seconds: float = 0.5
    max_loaded: int = 3  # OLLAMA_MAX_LOADED_MODELS
    parallel: int = 1  # OLLAMA_NUM_PARALLEL
    max_queue: int = 512  # OLLAMA_MAX_QUEUE
    keep_alive_default: str = "5m"  # OLLAMA_KEEP_ALIVE
    version: str = "0.12.6"
    seed: int = 0
    # Memory for models, in GiB: a model larger than this is refused with Ollama's 500 "model requires
    # more system memory" (llm/server.go) instead of loading. Unset: everything fits.
    memory_gb: float | None = None
    # Ollama's allowedHostsMiddleware: on a loopback address, 403 for a Host header that is not local.
    # Off by default so tests opt in to checking that a gateway rewrites Host.
    host_check: bool = False
    # Faults, changeable at run time through POST /_sim/faults. They apply to inference requests only
    # (generate, chat, embed and their /v1 forms), so health checks and discovery keep working.
    error_rate: float = 0.0  # share of inference requests answered 500 before streaming
    latency_ms: float = 0.0  # added before the first byte
    hang: bool = False  # accept, never answer
    drop_after: int | None = None  # drop the connection after N streamed chunks
    midstream_error_after: int | None = None  # emit an {"error"} line after N chunks and end
    # Pulls of these models fail partway, with an {"error"} line after some progress (as a registry
    # that drops the download would): a fleet-wide pull with one failing node, for tests.
    fail_pull: list[str] = field(default_factory=list)

    FAULTS: ClassVar[tuple[str, ...]] = (
        "error_rate",
        "latency_ms",
        "hang",
        "drop_after",
        "midstream_error_after",
        "tokens_per_second",
    )


def split_model_spec(spec: str) -> tuple[str, frozenset[str]]:
    """`"name=flag,flag"` → (name, flags). Unknown flags are an error, so typos do not pass silently."""
    name, _, raw = spec.partition("=")
    flags = frozenset(f.strip().lower() for f in raw.split(",") if f.strip())
    unknown = flags - set(MODEL_FLAGS)
    if unknown:
        raise ValueError(f"unknown model flag(s) {sorted(unknown)} in {spec!r}; known: {', '.join(MODEL_FLAGS)}")
    return name.strip(), flags
