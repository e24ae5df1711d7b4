"""The simulated node's models: names and Ollama-shaped metadata.

Every fact is derived from the model name (and its flags), so two nodes agree on a model's digest,
size and capabilities, as two real nodes that pulled the same model do.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime

from corral.sim.options import split_model_spec

DEFAULT_TAG = "latest"
DEFAULT_NUM_CTX = 4096


def normalize(name: str) -> str:
    """`m`, `m:latest`, `registry.ollama.ai/library/m:latest` (any case) are one model: `m:latest`."""
    name = name.strip().lower()
    if not name:
        return ""
    last = name.rsplit("/", 1)[-1]
    base, tag = name.rsplit(":", 1) if ":" in last else (name, DEFAULT_TAG)
    parts = base.split("/")
    if len(parts) == 3 and parts[0] == "registry.ollama.ai":
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts) + ":" + (tag or DEFAULT_TAG)


def full_name(norm: str) -> str:
    """The fully qualified form Ollama puts in capability errors."""
    slashes = norm.count("/")
    if slashes == 0:
        return f"registry.ollama.ai/library/{norm}"
    return f"registry.ollama.ai/{norm}" if slashes == 1 else norm


def stable_hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class ModelInfo:
    name: str  # normalised, e.g. "llama3.2:1b"
    size: int
    digest: str  # hex, without "sha256:"
    family: str
    parameter_size: str
    quantization: str
    modified_at: float  # unix seconds
    capabilities: tuple[str, ...]
    context_length: int  # the model's trained maximum (model_info)
    embedding_length: int

    @property
    def embedding(self) -> bool:
        return "embedding" in self.capabilities

    @property
    def thinking(self) -> bool:
        return "thinking" in self.capabilities

    @property
    def tools(self) -> bool:
        return "tools" in self.capabilities

    def details(self) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def renamed(self, name: str) -> ModelInfo:
        """A copy under another name (`/api/copy`): same blobs, so the same digest."""
        return replace(self, name=normalize(name), modified_at=time.time())


def _capabilities(norm: str, flags: frozenset[str]) -> tuple[str, ...]:
    if "embed" in flags or any(k in norm for k in ("embed", "bge", "minilm")):
        return ("embedding",)
    caps = ["completion"]
    # Gemma's templates have no tool support in Ollama's library; it is the realistic "no tools" model.
    if "tools" in flags or ("notools" not in flags and "gemma" not in norm and "notools" not in norm):
        caps.append("tools")
    if "vision" in flags or any(k in norm for k in ("llava", "vision")):
        caps.append("vision")
    thinking_name = any(k in norm for k in ("think", "qwen3", "deepseek-r1"))
    if "think" in flags or (thinking_name and "nothink" not in flags):
        caps.append("thinking")
    return tuple(caps)


def model_info(spec: str, modified_at: float | None = None) -> ModelInfo:
    """Facts for a model spec such as `llama3.2:1b` or `my-encoder=embed`."""
    name, flags = split_model_spec(spec)
    norm = normalize(name)
    h = stable_hash("model", norm)
    caps = _capabilities(norm, flags)
    tag = norm.rsplit(":", 1)[1]
    m = re.search(r"(\d+(?:\.\d+)?)b", tag)
    billions = float(m.group(1)) if m else 1.0 + (h % 80) / 10
    embedding = caps == ("embedding",)
    family = norm.split(":")[0].split("/")[-1].rstrip("0123456789.").rstrip("-") or "llama"
    if modified_at is None:
        # Fixed per name, so /api/tags orders the same on every node and every run.
        modified_at = datetime(2025, 1, 1).timestamp() + h % 20_000_000
    return ModelInfo(
        name=norm,
        size=274_302_450 if embedding else int(billions * 0.62e9),
        digest=hashlib.sha256(norm.encode()).hexdigest(),
        family="nomic-bert" if embedding else family,
        parameter_size="137M" if embedding else f"{billions:g}B",
        quantization="F16" if embedding else "Q4_K_M",
        modified_at=modified_at,
        capabilities=caps,
        context_length=2048 if embedding else 131072,
        embedding_length=768 if embedding else (2048 if billions <= 2 else 3072 if billions <= 4 else 4096),
    )
