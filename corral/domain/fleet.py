"""Immutable views of the fleet that routing decisions are made from.

The gateway keeps the mutable fleet state (adapters and app); it hands routing a snapshot of these
views. Nothing here reads a clock or does I/O: `now` is always an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class NodeKind(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A runner resident on a node, as `/api/ps` shows it (plus what the gateway knows)."""

    model: str  # normalised name (corral.domain.names.normalize)
    options_key: str = ""  # load-time options (num_ctx, ...) the runner was loaded with; "" = defaults
    size: int = 0
    size_vram: int = 0
    expires_at: float = float("inf")  # unix seconds
    digest: str = ""  # Ollama breaks eviction ties by the model's blob path, i.e. by its digest


# Not `frozen` (routing treats it as read-only all the same): one is built per node whose counts changed
# and per request, and a frozen dataclass's __init__ sets each field through object.__setattr__, which
# cost about 4 µs for this one against 0.8 plain (docs/benchmarks.md §5).
@dataclass(slots=True)
class NodeView:
    """One node as routing sees it at one instant."""

    name: str
    kind: NodeKind = NodeKind.OLLAMA
    up: bool = True  # active health checks say it answers
    admits: bool = True  # its circuit breaker lets a request through now
    draining: bool = False
    priority: int = 0  # higher is preferred by the `priority` strategy
    weight: float = 1.0
    max_concurrency: int | None = None  # gateway-side cap on in-flight requests to the node
    parallel: int = 1  # slots per loaded model (OLLAMA_NUM_PARALLEL, configured or observed)
    max_loaded: int = 3  # OLLAMA_MAX_LOADED_MODELS
    vram_bytes: int | None = None  # usable memory for models, when known
    pinned: frozenset[str] | None = None  # if set, the only models this node may serve
    available: frozenset[str] = frozenset()  # models on disk (from /api/tags or /v1/models)
    loaded: tuple[LoadedModel, ...] = ()  # resident runners (from /api/ps), gateway dispatches applied
    in_flight: int = 0  # requests the gateway has sent and not yet finished
    in_flight_by_model: Mapping[str, int] = field(default_factory=dict)  # normalised model -> in flight
    model_sizes: Mapping[str, int] = field(default_factory=dict)  # normalised model -> bytes on disk
    labels: Mapping[str, str] = field(default_factory=dict)  # backends[].labels: its node groups
    unfit: frozenset[str] = frozenset()  # models it recently refused to load for lack of memory (fit.py)

    def serves(self, model: str) -> bool:
        """The node has the model and is allowed to serve it."""
        if self.pinned is not None and model not in self.pinned:
            return False
        return model in self.available

    @property
    def eligible(self) -> bool:
        """The node may take a new request at all."""
        return self.up and self.admits and not self.draining


@dataclass(slots=True)  # not `frozen`, as NodeView: built once or twice per request, never changed
class RouteRequest:
    """What routing needs to know of one request."""

    model: str  # normalised
    options_key: str = ""  # load-time options of this request; differs from a runner's -> reload
    affinity: str | None = None  # session header or `user` field, for prompt-cache reuse
    exclude: frozenset[str] = frozenset()  # nodes already tried for this request
    # Expected prompt + output tokens, for work-aware scoring: the gateway fills it with the prompt's
    # length ÷ 4 plus the client's output cap (num_predict, max_tokens; 256 without one; 0 to embed).
    est_tokens: int = 256
    est_prompt_tokens: int = 0  # the prompt's share of est_tokens (the rest is expected output)
    nodes: Mapping[str, str] | None = None  # the model's node group (models.<name>.nodes)
    key_nodes: Mapping[str, str] | None = None  # the API key's node group: never a node outside it
    max_wait_s: float | None = None  # a fallback waits: no pick estimated to start later than this
    # queue.shed_after_s: refused (NoRouteReason.SHED) when no pick is estimated to start within this
    # (a load's own time not counted for a load into free room or the model's first copy: model_aware.py)
    shed_after_s: float | None = None
    # The nodes routed among are not the whole fleet (an admission offer round's one node), and one
    # outside them the request may use holds the model: no first-copy exemption under shed_after_s.
    held_elsewhere: bool = False
    # Prompt-cache affinity (domain/prefix_index.py): the node that last served this conversation's
    # longest known prefix, and how much later than the best it may start and still answer sooner.
    prefer: str | None = None
    prefer_slack_s: float = 0.0

    @property
    def est_output(self) -> int:
        """The expected output tokens: est_tokens beyond the prompt's share."""
        return self.est_tokens - min(self.est_prompt_tokens, self.est_tokens)


@dataclass(frozen=True, slots=True)
class Pick:
    node: str
    cold: bool = False  # the model must be loaded (or reloaded) on that node


class NoRouteReason(StrEnum):
    NO_SUCH_MODEL = "no_such_model"  # no node has the model (or may serve it)
    NO_HEALTHY_NODE = "no_healthy_node"  # nodes have it, but none is up/admitting/undrained
    ALL_FULL = "all_full"  # eligible nodes exist but every one is at its concurrency cap: queue
    OUTSIDE_MODEL_GROUP = "outside_model_group"  # nodes have it, none in the model's node group
    OUTSIDE_KEY_GROUP = "outside_key_group"  # nodes have it, none in the API key's node group
    TOO_SLOW = "too_slow"  # the best pick's estimated wait exceeds the request's max_wait_s
    SHED = "shed"  # every pick's estimated wait exceeds the request's shed_after_s


@dataclass(frozen=True, slots=True)
class NoRoute:
    reason: NoRouteReason
    wait_s: float | None = None  # TOO_SLOW, SHED: the soonest any pick could start it, in seconds
