"""What one run saw, request by request, kept compactly (parallel arrays of floats) so that a run of
millions of requests keeps every latency exactly; inter-token gaps, which can be far more numerous,
go into a log histogram. Live figures (counts and the p50/p99 so far) are cheap to read at any time.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

from corral.loadtest.stats import LogHistogram

_MAX_SAMPLES_PER_KIND = 3


@dataclass
class Recorder:
    origin: float  # clock reading the run's offsets count from
    # one entry per finished request, in finishing order (offsets and durations in seconds)
    scheduled: array[float] = field(default_factory=lambda: array("d"))
    ended: array[float] = field(default_factory=lambda: array("d"))
    ttft: array[float] = field(default_factory=lambda: array("d"))  # NaN: no first token (error, empty)
    send_lag: array[float] = field(default_factory=lambda: array("d"))  # sent - scheduled
    rate: array[float] = field(default_factory=lambda: array("d"))  # output tokens/s; NaN when unknown
    tokens: array[int] = field(default_factory=lambda: array("q"))
    ok: bytearray = field(default_factory=bytearray)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, list[str]] = field(default_factory=dict)
    itl: LogHistogram = field(default_factory=LogHistogram)
    live_latency: LogHistogram = field(default_factory=LogHistogram)
    live_ttft: LogHistogram = field(default_factory=LogHistogram)
    output_tokens: int = 0

    @property
    def count(self) -> int:
        return len(self.ok)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def success(
        self,
        scheduled: float,
        sent: float,
        first: float | None,
        end: float,
        tokens: int,
        rate: float = math.nan,
        gaps: list[float] | None = None,
    ) -> None:
        """A request answered in full. `first` is when its first token (or, not streamed, the answer's
        head) arrived; all are clock readings. `rate` is its output tokens/s, `gaps` its inter-token gaps."""
        self._common(scheduled, sent, end, first, tokens, True, rate)
        latency = end - scheduled
        self.live_latency.record(latency)
        if first is not None:
            self.live_ttft.record(first - scheduled)
        self.output_tokens += tokens
        if gaps:
            for gap in gaps:
                self.itl.record(gap)

    def failure(self, scheduled: float, sent: float, end: float, kind: str, detail: str = "") -> None:
        """A request that got an error status, an error inside its stream, or no whole answer. `kind`
        is the status code as text, or a word for what went wrong (timeout, connect, closed...)."""
        self._common(scheduled, sent, end, None, 0, False, math.nan)
        self.errors[kind] += 1
        samples = self.error_samples.setdefault(kind, [])
        if detail and len(samples) < _MAX_SAMPLES_PER_KIND and detail not in samples:
            samples.append(detail)

    def _common(
        self, scheduled: float, sent: float, end: float, first: float | None, tokens: int, ok: bool, rate: float
    ) -> None:
        self.scheduled.append(scheduled - self.origin)
        self.ended.append(end - self.origin)
        self.ttft.append(math.nan if first is None else first - scheduled)
        self.send_lag.append(max(0.0, sent - scheduled))
        self.tokens.append(tokens)
        self.ok.append(ok)
        self.rate.append(rate)

    def latencies(self) -> list[float]:
        """End-to-end latencies of the successful requests, from their scheduled send time."""
        return [e - s for s, e, good in zip(self.scheduled, self.ended, self.ok, strict=True) if good]

    def ttfts(self, failures_as: float | None = None) -> list[float]:
        """TTFT of the successful requests that had one; with `failures_as`, failed ones count as that."""
        out = [t for t, good in zip(self.ttft, self.ok, strict=True) if good and not math.isnan(t)]
        if failures_as is not None:
            out += [failures_as] * (self.count - sum(self.ok))
        return out
