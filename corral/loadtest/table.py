"""The tables printed at the end of a run, drawn from its report (report.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

COLUMNS = ("mean", "p50", "p90", "p95", "p99", "max")


def _duration(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:,.1f} s"
    if value >= 1:
        return f"{value:,.2f} s"
    if value >= 0.001:
        return f"{value * 1000:,.1f} ms"
    return f"{value * 1e6:,.0f} µs"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    return _number(value, 0 if value is not None and value >= 100 else 1)


def summary(report: dict[str, Any]) -> RenderableType:
    s, req, thr = report["settings"], report["requests"], report["throughput"]
    offered = (
        f"concurrency {s['concurrency']}"
        if s["mode"] == "closed"
        else f"Poisson {s['rate_per_s']:g}/s"
        if s["mode"] == "open"
        else f"ramp {s['ramp_per_s'][0]:g}..{s['ramp_per_s'][1]:g}/s"
    )
    title = f"{s['endpoint']} · {', '.join(s['models'])} · {'stream' if s['stream'] else 'no stream'} · {offered}"
    head = Table(title=title, title_justify="left")
    for name in ("requests", "ok", "errors", "duration", "req/s", "ok req/s", "out tok/s", "out tokens"):
        head.add_column(name, justify="right", no_wrap=True)
    head.add_row(
        f"{req['total']:,}",
        f"{req['ok']:,}",
        f"{req['errors']:,}",
        _duration(report["duration_s"]),
        _rate(thr["requests_per_s"]),
        _rate(thr["ok_per_s"]),
        _rate(thr["output_tokens_per_s"]),
        f"{report['output_tokens']['total']:,}",
    )
    dists = Table(title="distributions (latency and TTFT from the scheduled send time)", title_justify="left")
    dists.add_column("", no_wrap=True)
    dists.add_column("count", justify="right")
    for name in COLUMNS:
        dists.add_column(name, justify="right")
    rows: list[tuple[str, dict[str, Any], Any]] = [
        ("latency", report["latency_s"], _duration),
        ("TTFT", report["ttft_s"], _duration),
        ("inter-token", report["inter_token_latency_s"], _duration),
        ("tok/s per req", report["output_tokens_per_s_per_request"], _rate),
        ("tokens per req", report["output_tokens"]["per_request"], _rate),
        ("send lag", report["send_lag_s"], _duration),
    ]
    for label, dist, fmt in rows:
        if dist["count"]:
            dists.add_row(label, f"{dist['count']:,}", *(fmt(dist[c]) for c in COLUMNS))
    parts: list[RenderableType] = [head, dists]
    if req["errors_by_kind"]:
        errors = Table(title="errors", title_justify="left")
        errors.add_column("status or kind")
        errors.add_column("count", justify="right")
        errors.add_column("for example")
        for kind, count in req["errors_by_kind"].items():
            errors.add_row(kind, f"{count:,}", "; ".join(req["error_samples"].get(kind, []))[:160])
        parts.append(errors)
    if "ramp" in report:
        parts.append(ramp(report["ramp"]))
    if report.get("interrupted"):
        parts.append(Text("interrupted: the figures cover what finished before Ctrl-C", style="yellow"))
    return Group(*parts)


def ramp(data: dict[str, Any]) -> RenderableType:
    bound = data["ttft_bound_s"]
    table = Table(title=f"ramp: p99 TTFT against the bound of {_duration(bound)}", title_justify="left")
    for name in ("offered req/s", "achieved req/s", "TTFT p50", "TTFT p99", "errors", "within"):
        table.add_column(name, justify="right")
    for step in data["steps"]:
        rep = step["report"]
        table.add_row(
            _rate(step["rate_per_s"]),
            _rate(rep["throughput"]["requests_per_s"]),
            _duration(rep["ttft_s"]["p50"]),
            _duration(step["p99_ttft_s"]) if step["p99_ttft_s"] is not None else "∞",
            f"{rep['requests']['errors']:,}",
            "yes" if step["within_bound"] else "no",
        )
    best, over = data["max_rate_within_bound_per_s"], data["first_rate_over_bound_per_s"]
    if best is None:
        verdict = "p99 TTFT was over the bound already at the lowest rate"
    elif over is None:
        verdict = f"p99 TTFT stayed within the bound up to the highest rate, {best:,.1f}/s"
    else:
        verdict = f"highest rate within the bound: {best:,.1f}/s (over it at {over:,.1f}/s)"
    return Group(table, Text(verdict, style="bold"))
