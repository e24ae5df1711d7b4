"""Which node last served a conversation prefix: the bounded index behind prompt-cache-aware routing
(docs/routing.md), and the rule that lets `model-aware` follow it only while it costs less than the
prompt evaluation it saves.

The gateway hashes each request's prefix at message boundaries (corral.protocol.prefix); after a
request succeeds it records the boundary the next turn will share (and the first one, usually the
application's system prompt) against the node that served it. A new request's longest known boundary
names a node whose slots likely still hold that prefix. Entries are integers and node names only, in
an LRU of a fixed number of entries, so memory is bounded whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from corral.domain.fleet import NodeView

DEFAULT_SIZE = 65_536  # entries: about 12 MB (measured with tracemalloc)
DEFAULT_EVAL_RATE = 2_000.0  # prompt tokens/s a node evaluates, to price a cache hit, until configured
MAX_SLACK_S = 10.0  # never wait longer than this behind a busy node for its cache
# Of the prompt evaluation a cache hit saves, the share the request may be estimated to start later on
# the node that holds it. A small one: a node whose free slot is taken by more requests also decodes
# every answer slower, which a comparison of start times does not count, and a wait estimate behind a
# full node is uncertain. In today's cost model a free slot costs 0.01 s per request in flight there,
# so with this share a 5,000-token prefix at 4,000 tokens/s (1.25 s saved) lets the preferred node have
# about two requests more in flight than the best. In the policy simulation's multi-turn scenario,
# 1/64 beat 1/8 (later turns' p50 TTFT 0.08 s against 0.12 s, their p99 5% and the end-to-end p99 10%
# lower); all of the saving made the p99 1.5x worse; 0 (an exact tie only) kept half the gain
# (docs/benchmarks.md).
WAIT_SHARE = 1 / 64


@dataclass(frozen=True, slots=True)
class Preference:
    node: str
    cached_tokens: int  # prompt tokens that node likely holds already


class PrefixIndex:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = max(1, size)
        self._nodes: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._nodes)

    def find(self, hashes: Sequence[int], tokens: Sequence[int]) -> Preference | None:
        """The node of the longest known boundary (`hashes` shortest first, `tokens` before each)."""
        nodes = self._nodes
        for i in range(len(hashes) - 1, -1, -1):
            node = nodes.get(hashes[i])
            if node is not None:
                nodes.move_to_end(hashes[i])
                return Preference(node, tokens[i])
        return None

    def record(self, prefix_hash: int, node: str) -> None:
        """`node` served a request ending at this boundary: its slot holds the prefix now."""
        nodes = self._nodes
        nodes[prefix_hash] = node
        nodes.move_to_end(prefix_hash)
        if len(nodes) > self.size:
            nodes.popitem(last=False)


def slack_s(cached_tokens: int, eval_rate: float = DEFAULT_EVAL_RATE) -> float:
    """How much later than the best node the preferred one may be estimated to start the request: a
    share (WAIT_SHARE) of the prompt evaluation that a cache hit of `cached_tokens` saves there."""
    if eval_rate <= 0:
        return 0.0
    return min(MAX_SLACK_S, WAIT_SHARE * cached_tokens / eval_rate)


class Weighed(Protocol):
    """A node with the routing cost model's estimate for the request (route_costs.Option)."""

    @property
    def node(self) -> NodeView: ...
    @property
    def resident(self) -> bool: ...
    @property
    def cost(self) -> float: ...


W = TypeVar("W", bound=Weighed)


def prefer(options: Sequence[W], best: W, node: str | None, slack: float) -> W:
    """The preferred node's option when the model is resident there (an unload loses the cache) and
    its estimated wait is within `slack` of the best; else the best."""
    if node is None or best.node.name == node:
        return best
    for o in options:
        if o.node.name == node:
            return o if o.resident and o.cost <= best.cost + slack else best
    return best
