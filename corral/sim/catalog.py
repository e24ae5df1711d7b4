"""The simulated node's models: names, Ollama-shaped metadata, capabilities, deterministic text and
embeddings. Everything is derived from the model name, so every node agrees on a model's facts."""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_TAG = "latest"
_WORDS = (
    "the",
    "a",
    "model",
    "node",
    "token",
    "fleet",
    "river",
    "light",
    "stone",
    "cloud",
    "answer",
    "question",
    "simple",
    "quiet",
    "bright",
    "swift",
    "garden",
    "signal",
    "ocean",
    "pattern",
    "window",
    "story",
    "careful",
    "minute",
    "engine",
    "paper",
    "silver",
    "forest",
    "winter",
    "echo",
    "bridge",
    "lantern",
    "harbor",
    "meadow",
    "compass",
    "thunder",
    "velvet",
    "orbit",
    "crystal",
    "ember",
    "falcon",
    "glacier",
    "horizon",
)


def normalize(name: str) -> str:
    """`m`, `m:latest`, `registry.ollama.ai/library/m:latest` (any case) are one model."""
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


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class ModelInfo:
    name: str  # normalised
    size: int
    digest: str
    family: str
    parameter_size: str
    quantization: str
    modified_at: datetime
    embedding: bool
    thinking: bool
    context_length: int = 4096

    @property
    def capabilities(self) -> list[str]:
        if self.embedding:
            return ["embedding"]
        caps = ["completion", "tools"]
        if self.thinking:
            caps.append("thinking")
        return caps

    def details(self, parent: bool = True) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def tags_entry(self) -> dict[str, object]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at.isoformat(),
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }


def model_info(name: str) -> ModelInfo:
    norm = normalize(name)
    h = _h("model", norm)
    tag = norm.rsplit(":", 1)[1]
    m = re.search(r"(\d+(?:\.\d+)?)b", tag)
    billions = float(m.group(1)) if m else 1.0 + (h % 80) / 10
    embedding = "embed" in norm or "bge" in norm
    thinking = any(k in norm for k in ("think", "qwen3", "deepseek-r1"))
    family = norm.split(":")[0].split("/")[-1].rstrip("0123456789.").rstrip("-") or "llama"
    modified = datetime(2026, 1, 1).astimezone() + timedelta(seconds=h % 10_000_000)
    return ModelInfo(
        name=norm,
        size=int(billions * 0.6e9) if not embedding else 274_302_450,
        digest=hashlib.sha256(norm.encode()).hexdigest(),
        family="nomic-bert" if embedding else family,
        parameter_size=f"{billions:g}B" if not embedding else "137M",
        quantization="Q4_K_M" if not embedding else "F16",
        modified_at=modified,
        embedding=embedding,
        thinking=thinking,
    )


def count_words(text: str) -> int:
    return max(1, len(text.split()))


def generate_tokens(model: str, prompt: str, seed: int, num_predict: int | None) -> tuple[list[str], str]:
    """The tokens a request produces and its done_reason. Deterministic for (model, prompt, seed)."""
    rng = random.Random(_h("text", normalize(model), prompt, seed))
    natural = 8 + rng.randrange(24)
    limit = natural if num_predict is None or num_predict < 0 else min(num_predict, 4096)
    if num_predict is not None and num_predict >= 0 and num_predict < natural:
        reason = "length"
        count = num_predict
    else:
        reason = "stop"
        count = limit
    tokens = []
    for i in range(count):
        word = rng.choice(_WORDS)
        tokens.append((" " if i else "") + (word.capitalize() if i == 0 else word))
    if count and reason == "stop":
        tokens[-1] += "."
    return tokens, reason


def embed(model: str, text: str, dims: int = 64) -> list[float]:
    """A deterministic unit vector for the text."""
    rng = random.Random(_h("embed", normalize(model), text))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
