"""The work each runner has ahead of it, in tokens, and how long that takes (issue 17).

Model-aware routing needs the wait a request would see on a runner. Counting requests is not enough:
a request behind a 16k-token prompt waits far longer than one behind a greeting, and a free slot on a
runner still prefilling long prompts is not free. So the router keeps, per runner (node, model), the
requests it sent there and has not seen finish, oldest first, each with its expected prompt and output
tokens (`RouteRequest.est_tokens`), and learns per model how fast a slot works through them.

The model of a runner (fleet-model.md §6(a); Ollama's `runner/ollamarunner/runner.go` batches every
active sequence into one forward pass):

- a runner with `parallel` p decodes up to p sequences at once; with b of them each is slower by
  (1 + s·(b − 1)), s the batching factor, so the runner's throughput grows with b but less than b times;
- prompts are prefilled before their sequences decode, and the GPU does one prefill at a time: a new
  request's first token waits for the prompts ahead of it even when a slot is free;
- with every slot taken, a request waits until enough of those ahead have finished to free one.

Rates are learnt from what the gateway sees: the time from the first token to the last teaches the
model's seconds per output token (divided by the batching slowdown at the time, so it is per sequence
alone), and the time to the first token of a request that had nothing ahead teaches its seconds per
prompt token. Before any observation, priors from the model's size stand in.

Requests the gateway stops tracking without a `finished` call (errors, cancelled streams) are dropped
by `sync`, which trims a runner's entries to the requests the gateway still counts in flight there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RunnerKey = tuple[str, str]  # (node, model)


@dataclass(slots=True)
class Entry:
    prompt: int  # expected prompt tokens
    output: int  # expected output tokens
    sent_at: float
    clean: bool  # nothing was ahead of it on a ready runner: its time to first token is its prefill
    started_at: float | None = None  # its first token came
    timed: bool = False  # ... and came streamed, so that first token to last is its decode


class Ledger:
    def __init__(self, batching: float = 0.35, learn_rate: float = 0.2, max_entries: int = 4096) -> None:
        self.batching = batching
        self.learn_rate = learn_rate
        self.max_entries = max_entries  # per runner: Ollama's own queue holds 512
        self._runners: dict[RunnerKey, deque[Entry]] = {}
        self._busy: dict[str, set[str]] = {}  # node -> models with requests there (they time-share its GPU)
        # model -> (seconds, tokens), both averaged: their ratio is the learnt rate. A ratio of averages,
        # not an average of ratios: finishes are paired with the wrong request now and then (a short
        # answer overtakes a long one), which evens out in sums but would bias a mean of quotients.
        self._decode: dict[str, tuple[float, float]] = {}  # per output token, one sequence alone
        self._prompt: dict[str, tuple[float, float]] = {}  # per prompt token

    # what the gateway did and saw

    def dispatched(self, node: str, model: str, prompt: int, output: int, now: float, ready: bool) -> None:
        """A request went to the runner; `ready`: the runner was loaded (not loading for it)."""
        entries = self._runners.get((node, model))
        if entries is None:
            entries = self._runners[(node, model)] = deque()
            self._busy.setdefault(node, set()).add(model)
        clean = ready and not any(e.started_at is None for e in entries)
        if len(entries) < self.max_entries:
            entries.append(Entry(max(0, prompt), max(1, output), now, clean))

    def started(self, node: str, model: str, now: float, timed: bool = True) -> None:
        """The first token of the oldest request not yet started came back."""
        entries = self._runners.get((node, model))
        if not entries:
            return
        for entry in entries:
            if entry.started_at is None:
                entry.started_at = now
                entry.timed = timed
                if timed and entry.clean and entry.prompt >= 64:
                    self._learn(self._prompt, model, now - entry.sent_at, entry.prompt)
                return

    def finished(
        self, node: str, model: str, service_s: float, output: int | None = None, started: bool = True
    ) -> None:
        """A request held its slot for `service_s` from first token to last. With `output` (its expected
        output tokens), one to forget without learning from it: cut short, or an error answer
        (`started`: whether its first token was reported, `started()`; an error answer's was not)."""
        entries = self._runners.get((node, model))
        if not entries:
            return
        running = [e for e in entries if e.started_at is not None]
        # Other models busy on the node shared its GPU meanwhile (as far as this gateway knows).
        slowdown = (1 + self.batching * max(0, len(running) - 1)) * max(1, len(self._busy.get(node, ())))
        if output is not None:
            # The one expecting about that output (the gateway's own estimate of it), among those in the
            # same state (an error answer's entry was never started: a running one must not go for it).
            expected = max(1, output)
            alike = [e for e in entries if (e.started_at is not None) == started] or list(entries)
            entry = min(alike, key=lambda e: abs(e.output - expected))
            service_s = 0.0
        elif running:
            # The one whose expected decode is nearest what was seen (answers do not end in order).
            tpot = self.tpot(model, 0.0) * slowdown
            entry = min(running, key=lambda e: abs(e.output * tpot - service_s))
        else:
            entry = entries[0]
        entries.remove(entry)
        if not entries:
            self._drop(node, model)
        if service_s > 0 and entry.timed:
            self._learn(self._decode, model, service_s / slowdown, entry.output)

    def sync(self, node: str, model: str, in_flight: int) -> None:
        """The gateway counts `in_flight` requests on the runner: forget the oldest beyond that."""
        entries = self._runners.get((node, model))
        if entries is None:
            return
        while len(entries) > in_flight:
            entries.popleft()
        if not entries:
            self._drop(node, model)

    def prune(self, now: float, max_age_s: float) -> None:
        """Forget requests sent longer ago than any request lasts (a node removed since, say)."""
        for key in [k for k, entries in self._runners.items() if now - entries[-1].sent_at > max_age_s]:
            self._drop(*key)

    def _drop(self, node: str, model: str) -> None:
        self._runners.pop((node, model), None)
        models = self._busy.get(node)
        if models is not None:
            models.discard(model)
            if not models:
                del self._busy[node]

    # estimates

    def tpot(self, model: str, prior: float) -> float:
        """Seconds per output token of one sequence alone on the GPU."""
        return _rate(self._decode.get(model), prior)

    def prefill(self, model: str, prior: float) -> float:
        """Seconds per prompt token."""
        return _rate(self._prompt.get(model), prior)

    def ahead(self, node: str, model: str) -> int:
        entries = self._runners.get((node, model))
        return len(entries) if entries else 0

    def wait(
        self, node: str, model: str, slots: int, tpot: float, prefill: float, now: float, unknown: tuple[int, float]
    ) -> float:
        """Seconds until a new request on the runner could start its own prefill, on a GPU to itself:
        the prompts ahead of it, or, with every slot taken, until one is free. `unknown`: requests in
        flight there that the ledger was not told of (count, slot-seconds each), as typical ones."""
        entries = self._runners.get((node, model)) or ()
        extra, extra_s = unknown
        n = len(entries) + max(0, extra)
        if n == 0:
            return 0.0
        slots = max(1, slots)
        prompts = 0
        decode = 0.0
        for e in entries:
            if e.started_at is None:
                prompts += e.prompt
                decode += e.output
        if n < slots:  # a slot is free: only the prompts ahead count (the decode below is not needed)
            return prompts * prefill
        slowdown = 1 + self.batching * (min(n, slots) - 1)
        for e in entries:
            if e.started_at is not None:
                done = (now - e.started_at) / (tpot * slowdown)
                decode += max(0.1 * e.output, e.output - done)  # late ones are near their end, not past it
        prefill_s = prompts * prefill
        # n requests ahead share `slots` slots at `slowdown`: a slot frees once (n - slots + 1) of them
        # are done, after about that share of the work ahead.
        work_s = prefill_s + decode * tpot * slowdown + max(0, extra) * extra_s
        return max(prefill_s, work_s * (n - slots + 1) / (n * slots))

    def unstarted_prompts(self, node: str, model: str, in_flight: int) -> int:
        """`sync`, then the prompt tokens of the runner's requests not yet started: with a slot free,
        `wait` is their prefill alone."""
        self.sync(node, model, in_flight)
        prompts = 0
        for e in self._runners.get((node, model)) or ():
            if e.started_at is None:
                prompts += e.prompt
        return prompts

    def runners(self) -> int:
        return len(self._runners)

    def _learn(self, rates: dict[str, tuple[float, float]], model: str, seconds: float, tokens: int) -> None:
        old = rates.get(model)
        if old is None:
            rates[model] = (seconds, float(tokens))
            return
        # One sample may say at most 4x the current rate: a wait the ledger did not see (a load it
        # took for done) must not teach the model a slow GPU.
        seconds = min(seconds, 4 * tokens * old[0] / old[1])
        w = self.learn_rate
        rates[model] = (old[0] + w * (seconds - old[0]), old[1] + w * (tokens - old[1]))


def _rate(learnt: tuple[float, float] | None, prior: float) -> float:
    return learnt[0] / learnt[1] if learnt is not None and learnt[1] > 0 else prior
