"""What fits where: keep a model off the nodes that cannot hold it.

Two sources say a model does not fit a node. The operator's `vram_gb`: a model whose weights alone
(its size on disk, from `/api/tags`) exceed the node's memory for models cannot be loaded on its GPU.
And the node itself: when Ollama cannot load a model even after evicting everything else it answers
500 before any byte, "model requires more system memory (X) than is available (Y)" (`llm/server.go`,
NewLlamaServer), or the runner dies allocating ("cudaMalloc failed: out of memory", reported through
`llm/status.go`). The gateway retries such a refusal on another node and marks the model unfit on the
refusing node for a while (`NodeView.unfit`).

Never stricter than Ollama: when no node the request may use fits the model, every one stays a
candidate (Ollama may still run it partly on the CPU, or answer its own error).
"""

from __future__ import annotations

from corral.domain.fleet import NodeView

REFUSAL_TTL_S = 600.0  # how long a refusal keeps the model off the node (its memory may be freed later)

# Phrases of the answers (HTTP 500) Ollama gives when a model cannot be loaded for lack of memory.
_REFUSALS = (
    b"requires more system memory",
    b"out of memory",
    b"insufficient memory",
    b"not enough memory",
    b"cudamalloc failed",
    b"failed to allocate",
)


def is_fit_refusal(status: int, body: bytes) -> bool:
    """The node's answer says the model does not fit there: another node should get it."""
    if status != 500:
        return False
    text = body[:2048].lower()
    return any(phrase in text for phrase in _REFUSALS)


def fits(node: NodeView, model: str, refused_at: int = 0) -> bool:
    """Nothing says the model cannot be loaded on the node (alone, if need be). `refused_at`: the
    most memory (`vram_gb`) of a node that refused it: a node with no more than that will refuse too."""
    if model in node.unfit:
        return False
    if node.vram_bytes is None:
        return True
    return node.model_sizes.get(model, 0) <= node.vram_bytes and node.vram_bytes > refused_at


def fitting(nodes: list[NodeView], model: str) -> list[NodeView]:
    """The nodes the model fits; all of them when it fits none (let Ollama decide then)."""
    refused_at = 0
    unfit = False
    for n in nodes:  # one pass, and no copy in the common case where the model fits everywhere
        if n.unfit and model in n.unfit:
            refused_at = max(refused_at, n.vram_bytes or 0)
            unfit = True
        elif n.vram_bytes is not None and n.model_sizes.get(model, 0) > n.vram_bytes:
            unfit = True
    if not unfit:
        return nodes
    kept = [n for n in nodes if fits(n, model, refused_at)]
    return kept or nodes
