"""Settings of one simulated Ollama node."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 11434
    models: list[str] = field(default_factory=lambda: ["llama3.2:1b"])
    tokens_per_second: float = 50.0
    load_seconds: float = 0.5
    max_loaded: int = 3  # OLLAMA_MAX_LOADED_MODELS
    parallel: int = 1  # OLLAMA_NUM_PARALLEL
    max_queue: int = 512  # OLLAMA_MAX_QUEUE
    keep_alive_default: str = "5m"  # OLLAMA_KEEP_ALIVE
    version: str = "0.12.6"
    seed: int = 0
    # Faults, changeable at run time through POST /_sim/faults.
    error_rate: float = 0.0  # share of inference requests answered 500 before streaming
    latency_ms: float = 0.0  # added before the first byte
    hang: bool = False  # accept, never answer
    drop_after: int | None = None  # drop the connection after N streamed tokens
    midstream_error_after: int | None = None  # emit an {"error"} line after N tokens and end

    FAULTS = ("error_rate", "latency_ms", "hang", "drop_after", "midstream_error_after", "tokens_per_second")
