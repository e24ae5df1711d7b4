"""`corral status`: the fleet as a table, from GET /internal/status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def fetch(url: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url.rstrip("/") + "/internal/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            data: dict[str, Any] = json.loads(reply.read())
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        console.print(f"[bold red]error:[/] cannot read {url}/internal/status: {exc}")
        raise typer.Exit(1) from None


def show(url: str, as_json: bool, key: str | None = None) -> None:
    data = fetch(url, key)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    ready = "[green]ready[/]" if data.get("ready") else "[red]not ready[/]"
    console.print(
        f"Corral {data.get('version')} at {url}: {ready}, up {data.get('uptime_s')}s, "
        f"queue {data.get('queue', {}).get('waiting', 0)}"
    )
    config = data.get("config")
    if isinstance(config, dict):
        last = config.get("last_reload") or {}
        reload = f", last reload {last.get('result')} at {last.get('at')}" if last else ""
        console.print(f"config {config.get('hash')} loaded at {config.get('loaded_at')}{reload}", highlight=False)
        if last.get("error"):
            console.print(f"[red]{escape(str(last['error']))}[/]", highlight=False)
    table = Table(show_lines=False)
    for column in (
        "node",
        "state",
        "breaker",
        "in flight",
        "requests",
        "failures",
        "labels",
        "loaded",
        "models",
        "last error",
    ):
        table.add_column(column, no_wrap=column == "node", overflow="fold")
    colours = {"up": "green", "down": "red", "draining": "yellow"}
    for node in data.get("nodes", []):
        state = node.get("state", "?")
        table.add_row(
            node.get("name", "?"),
            f"[{colours.get(state, 'white')}]{state}[/]",
            str(node.get("breaker")),
            str(node.get("in_flight")),
            str(node.get("requests_total")),
            str(node.get("failures_total")),
            ",".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items())) or "-",
            ", ".join(m["model"] for m in node.get("loaded", [])) or "-",
            ", ".join(node.get("models", [])) or "-",
            node.get("last_error") or "",
        )
    console.print(table)
