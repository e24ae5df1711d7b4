"""Every figure of a run as one JSON-ready dict (what `--json` writes and the table and chart read).

Durations are in seconds. Latency and TTFT count from each request's scheduled send time, over the
requests that succeeded; errors are counted apart, by HTTP status or by what went wrong.
"""

from __future__ import annotations

import math
from typing import Any

from corral.loadtest.record import Recorder
from corral.loadtest.stats import bins, distribution, percentile, timeline


def summarize(rec: Recorder, settings: dict[str, Any]) -> dict[str, Any]:
    """The report of one run (or one ramp step): `settings` says what was offered."""
    ok = sum(rec.ok)
    span = max(rec.ended, default=0.0)
    latencies = sorted(rec.latencies())
    ttfts = sorted(rec.ttfts())
    per_request = [r for r, good in zip(rec.rate, rec.ok, strict=True) if good and not math.isnan(r)]
    tokens = [n for n, good in zip(rec.tokens, rec.ok, strict=True) if good]
    return {
        "settings": settings,
        "duration_s": span,
        "requests": {
            "total": rec.count,
            "ok": ok,
            "errors": rec.error_count,
            "errors_by_kind": dict(sorted(rec.errors.items())),
            "error_samples": rec.error_samples,
        },
        "throughput": {
            "requests_per_s": rec.count / span if span > 0 else None,
            "ok_per_s": ok / span if span > 0 else None,
            "output_tokens_per_s": rec.output_tokens / span if span > 0 else None,
        },
        "latency_s": distribution(latencies),
        "ttft_s": distribution(ttfts),
        "inter_token_latency_s": rec.itl.distribution(),
        "output_tokens": {"total": rec.output_tokens, "per_request": distribution(tokens)},
        "output_tokens_per_s_per_request": distribution(per_request),
        # how late requests left against their schedule: high values mean the load generator itself
        # (CPU, or every connection busy) could not keep up, and latency includes that wait
        "send_lag_s": distribution(rec.send_lag),
        "histograms": {
            "latency_s": [list(b) for b in bins(latencies)],
            "ttft_s": [list(b) for b in bins(ttfts)],
        },
        "timeline": timeline(rec.scheduled, rec.ended, [bool(x) for x in rec.ok], rec.tokens, rec.ttft, span),
    }


def merge(recorders: list[Recorder]) -> Recorder:
    """One recorder holding the requests of several consecutive ones (the steps of a ramp), with their
    offsets moved onto the first one's clock."""
    whole = Recorder(recorders[0].origin)
    for rec in recorders:
        shift = rec.origin - whole.origin
        whole.scheduled.extend(t + shift for t in rec.scheduled)
        whole.ended.extend(t + shift for t in rec.ended)
        for name in ("ttft", "send_lag", "rate", "tokens"):
            getattr(whole, name).extend(getattr(rec, name))
        whole.ok.extend(rec.ok)
        whole.errors.update(rec.errors)
        for kind, samples in rec.error_samples.items():
            whole.error_samples.setdefault(kind, []).extend(samples)
        whole.itl.merge(rec.itl)
        whole.output_tokens += rec.output_tokens
    return whole


def ramp_p99_ttft(rec: Recorder) -> float:
    """The ramp's criterion: p99 TTFT with every failed request counted as infinitely slow."""
    values = sorted(rec.ttfts(failures_as=math.inf))
    return percentile(values, 99) if values else math.inf
