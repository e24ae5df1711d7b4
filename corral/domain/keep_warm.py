"""Keep-warm: a model whose room no one needs is not unloaded just because its keep-alive ran out
(docs/routing.md, "Keep-warm").

Ollama unloads a runner once it has been idle for its keep-alive (5 minutes by default: server/sched.go,
the expire timer set when a runner's last request ends), whether or not anything wants its memory. The
next request for that model then waits for a load, though the node had room to spare all along. This
rule refreshes such a runner's keep-alive shortly before it runs out, the way Ollama itself loads a
model (an empty-prompt generate with `keep_alive`, server/routes.go GenerateHandler), but only while:

- the node is up and may take requests, and the runner is idle (no request of the gateway's on it:
  a busy runner's timer restarts when it finishes anyway);
- no load is pending on that node: nothing in flight there for a model it does not hold;
- the node has free room: fewer runners than OLLAMA_MAX_LOADED_MODELS and, where its memory is known,
  room for another model it serves (Ollama loads into 80% of free memory);
- the runner was loaded with the default options: an empty generate carries none, and Ollama would
  reload a runner whose num_ctx differs (server/sched.go needsReload);
- its expiry, as `/api/ps` last showed it, is near (within `margin_s`) but not so near that the refresh
  could arrive after Ollama unloaded it (it would then load the model again).

The keep_alive sent is finite (`keep_alive`, Ollama's 5m by default), never -1: when memory is wanted,
Ollama picks its victim by shortest keep-alive, then name (server/sched.go ByDurationAndName), so a
refreshed runner sorts exactly as an untouched one and is evicted as before. When the node is full,
or a load waits there, refreshing stops and the runner expires normally.

Pure: `decide` takes the nodes as routing sees them and the wall-clock time (`/api/ps` expiries are
unix seconds) and returns the refreshes for the caller to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.residency import Action

__all__ = ["KeepWarm", "KeepWarmParams", "has_room", "load_pending"]

SAFETY_S = 5.0  # never refresh a runner due to expire sooner than this: the request could come too late


@dataclass(frozen=True, slots=True)
class KeepWarmParams:
    keep_alive: str = "5m"  # what a refresh sends: finite (validated in corral.config)
    keep_alive_s: float = 300.0  # the same, in seconds
    margin_s: float = 60.0  # refresh a runner due to expire within this long


class KeepWarm:
    def __init__(self, params: KeepWarmParams | None = None) -> None:
        self.p = params or KeepWarmParams()
        # (node, model) -> when it was last refreshed: `/api/ps` shows the new expiry only at its next
        # poll, and one refresh per keep-alive is enough.
        self._sent: dict[tuple[str, str], float] = {}
        self.refreshed = 0

    def decide(self, nodes: Sequence[NodeView], now: float) -> list[Action]:
        """The refreshes to send now (`now`: unix seconds, as `/api/ps` expiries)."""
        actions: list[Action] = []
        for node in nodes:
            if not node.eligible or load_pending(node) or not has_room(node):
                continue
            for runner in node.loaded:
                if self._due(node, runner, now):
                    self._sent[(node.name, runner.model)] = now
                    left = runner.expires_at - now
                    actions.append(
                        Action("refresh", node.name, runner.model, self.p.keep_alive, f"idle, {left:.0f} s left")
                    )
        stale = [k for k, at in self._sent.items() if now - at > self.p.keep_alive_s]
        for key in stale:
            del self._sent[key]
        self.refreshed += len(actions)
        return actions

    def _due(self, node: NodeView, runner: LoadedModel, now: float) -> bool:
        if runner.options_key or node.in_flight_by_model.get(runner.model, 0) > 0:
            return False
        left = runner.expires_at - now
        if not SAFETY_S < left <= self.p.margin_s:
            return False  # far off (or pinned: expires_at is years away), or too close to race
        # `/api/ps` shows a refresh only at its next read: none again for as long as the last one could
        # still be unseen (the margin less the safety, so the next falls before the safety again).
        last = self._sent.get((node.name, runner.model))
        return last is None or now - last >= self.p.margin_s - SAFETY_S


def load_pending(node: NodeView) -> bool:
    """Something in flight on the node is for a model it does not hold: a load waits for room there."""
    held = {m.model for m in node.loaded}
    return any(count > 0 and model not in held for model, count in node.in_flight_by_model.items())


def has_room(node: NodeView) -> bool:
    """The node could load another model it serves without evicting: a runner slot free and, where its
    memory is known, 80% of its free memory fits the smallest such model (weights plus 30%, as routing
    estimates a runner it has not seen)."""
    if len(node.loaded) >= node.max_loaded:
        return False
    if node.vram_bytes is None:
        return True
    held = {m.model for m in node.loaded}
    others = [size for model, size in node.model_sizes.items() if model not in held and node.serves(model)]
    if not others:
        return True  # nothing else could want the room
    used = sum(m.size or m.size_vram or int(node.model_sizes.get(m.model, 0) * 1.3) for m in node.loaded)
    return min(others) * 1.3 <= 0.8 * (node.vram_bytes - used)
