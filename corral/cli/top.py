"""`corral top`: the fleet live in the terminal: requests/s, TTFT, tokens/s per node."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from corral.cli.status import fetch


def _rates(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, dict[str, float]]:
    old = {n["name"]: n for n in before.get("nodes", [])}
    out: dict[str, dict[str, float]] = {}
    for node in after.get("nodes", []):
        prev = old.get(node["name"], node)
        ttft_n = node.get("ttft_count", 0) - prev.get("ttft_count", 0)
        ttft_s = node.get("ttft_sum_s", 0.0) - prev.get("ttft_sum_s", 0.0)
        out[node["name"]] = {
            "rps": (node.get("requests_total", 0) - prev.get("requests_total", 0)) / seconds,
            "tps": (node.get("completion_tokens_total", 0) - prev.get("completion_tokens_total", 0)) / seconds,
            "ttft_ms": (ttft_s / ttft_n * 1000) if ttft_n > 0 else float("nan"),
            "errors": (node.get("failures_total", 0) - prev.get("failures_total", 0)) / seconds,
        }
    return out


def render(url: str, data: dict[str, Any], rates: dict[str, dict[str, float]]) -> Group:
    total_rps = sum(r["rps"] for r in rates.values())
    total_tps = sum(r["tps"] for r in rates.values())
    waiting = data.get("queue", {}).get("waiting", 0)
    head = Text.from_markup(
        f"[bold]corral top[/] {url}  ready={data.get('ready')}  queue={waiting}  "
        f"req/s={total_rps:.1f}  tok/s={total_tps:.0f}"
    )
    table = Table(expand=True)
    for column in ("node", "state", "breaker", "in flight", "req/s", "tok/s", "TTFT ms", "err/s", "loaded"):
        table.add_column(column, justify="right" if column not in ("node", "state", "loaded") else "left")
    for node in data.get("nodes", []):
        rate = rates.get(node["name"], {})
        ttft = rate.get("ttft_ms", float("nan"))
        table.add_row(
            node["name"],
            node.get("state", "?"),
            str(node.get("breaker")),
            str(node.get("in_flight", 0)),
            f"{rate.get('rps', 0):.1f}",
            f"{rate.get('tps', 0):.0f}",
            "-" if ttft != ttft else f"{ttft:.0f}",
            f"{rate.get('errors', 0):.2f}",
            ", ".join(m["model"] for m in node.get("loaded", [])) or "-",
        )
    return Group(head, table)


def run(url: str, interval: float, iterations: int | None) -> None:
    previous = fetch(url)
    last = time.monotonic()
    count = 0
    with Live(render(url, previous, {}), refresh_per_second=4, screen=False) as live:
        while iterations is None or count < iterations:
            time.sleep(interval)
            current = fetch(url)
            now = time.monotonic()
            live.update(render(url, current, _rates(previous, current, now - last)))
            previous, last = current, now
            count += 1
