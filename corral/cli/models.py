"""`corral models`: the fleet's models as one matrix, and pull/delete/warm/unload on several nodes at
once with a live progress bar per node. Sync (placement as code) and rollout live in their own modules."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from corral.cli.admin_client import DEFAULT_URL, AdminClient, AdminError, KeyOpt, UrlOpt
from corral.domain.names import normalize

app = typer.Typer(
    no_args_is_help=True, help="Models across the fleet: list, pull, delete, warm, unload, sync, rollout."
)
console = Console()
err = Console(stderr=True)

NodesOpt = Annotated[
    str | None, typer.Option("--nodes", help="Comma-separated node names (default: see each command).")
]


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size else "-"


def _split(nodes: str | None) -> list[str] | None:
    return [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command("list")
def list_models(url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """A matrix of models × nodes: available, loaded (VRAM) and digest; flags drift (one name, several digests)."""
    try:
        data = AdminClient(url, key).inventory()
    except AdminError as exc:
        raise _fail(str(exc)) from None
    nodes: list[dict[str, Any]] = data.get("nodes", [])
    drift: dict[str, dict[str, str]] = data.get("drift", {})
    table = Table(title="models × nodes")
    table.add_column("model", no_wrap=True)
    for node in nodes:
        colour = {"up": "green", "down": "red", "draining": "yellow"}.get(node["state"], "white")
        table.add_column(f"{node['name']}\n[{colour}]{node['state']}[/]", no_wrap=True)
    table.add_column("drift")
    cells: dict[str, dict[str, str]] = {}
    for node in nodes:
        for m in node.get("models", []):
            text = f"{m['digest'][:12] or '?'}"
            text += f"\n[green]loaded[/] {_gib(m['size_vram'])}" if m["loaded"] else "\navailable"
            cells.setdefault(m["model"], {})[node["name"]] = text
    for model in sorted(cells):
        row = [cells[model].get(n["name"], "[dim]-[/]") for n in nodes]
        table.add_row(model, *row, "[bold red]DRIFT[/]" if model in drift else "")
    console.print(table)
    for model, by_node in sorted(drift.items()):
        pairs = ", ".join(f"{node} {digest[:12]}" for node, digest in sorted(by_node.items()))
        console.print(f"[bold red]drift:[/] {model} differs between nodes: {pairs}")


def targets(client: AdminClient, model: str, nodes: list[str] | None, which: str) -> list[str]:
    """The nodes a command acts on: those named, else by `which`: all up Ollama nodes ("up"), the up
    nodes that have the model ("have"), or those where it is loaded ("loaded")."""
    if nodes:
        return nodes
    wanted = normalize(model)
    out = []
    for node in client.inventory().get("nodes", []):
        if node["state"] == "down":
            continue
        have = {m["model"]: m for m in node.get("models", [])}
        if (
            which == "up"
            or (which == "have" and wanted in have)
            or (which == "loaded" and have.get(wanted, {}).get("loaded"))
        ):
            out.append(node["name"])
    return out


def run_per_node(
    nodes: list[str], work: Callable[[str, Progress, TaskID], None], what: str, bar: bool = False
) -> dict[str, str]:
    """Run `work(node, progress, task)` on every node at once, a progress line per node; the failures."""
    failures: dict[str, str] = {}
    columns = (
        [TextColumn("{task.description:<16}"), BarColumn(), DownloadColumn()]
        if bar
        else [TextColumn("{task.description:<16}")]
    )
    with Progress(*columns, TextColumn("{task.fields[note]}"), console=console) as progress:
        tasks = {n: progress.add_task(n, total=None, note=what) for n in nodes}

        def one(node: str) -> None:
            try:
                work(node, progress, tasks[node])
                progress.update(tasks[node], note="[green]done[/]", completed=progress.tasks[tasks[node]].total or 1,
                                total=progress.tasks[tasks[node]].total or 1)  # fmt: skip
            except AdminError as exc:
                failures[node] = str(exc)
                progress.update(tasks[node], note=f"[red]failed: {exc}[/]")

        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            list(pool.map(one, nodes))
    return failures


def pull_on(client: AdminClient, model: str) -> Callable[[str, Progress, TaskID], None]:
    def work(node: str, progress: Progress, task: TaskID) -> None:
        layers: dict[str, tuple[int, int]] = {}
        for line in client.stream("POST", "/api/pull", {"model": model}, node=node, timeout_s=3600):
            if line.get("digest") and line.get("total"):
                layers[line["digest"]] = (int(line.get("completed") or 0), int(line["total"]))
                done, total = sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())
                progress.update(task, completed=done, total=total, note=str(line.get("status", "")))
            else:
                progress.update(task, note=str(line.get("status", "")))

    return work


def _finish(failures: dict[str, str], nodes: list[str], verb: str, model: str) -> None:
    for node, reason in sorted(failures.items()):
        err.print(f"[bold red]{node}:[/] {verb} {model} failed: {reason}")
    if failures:
        raise typer.Exit(1)
    console.print(f"{verb} {model}: done on {', '.join(nodes)}")


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="The model, e.g. llama3.2:1b.")],
    nodes: NodesOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Pull a model on the nodes (default: every node that is up), a progress bar per node."""
    client = AdminClient(url, key)
    try:
        chosen = targets(client, name, _split(nodes), "up")
    except AdminError as exc:
        raise _fail(str(exc)) from None
    if not chosen:
        raise _fail("no node is up to pull on")
    _finish(run_per_node(chosen, pull_on(client, name), "pulling", bar=True), chosen, "pull", name)


def _simple(verb: str, which: str, call: Callable[[AdminClient, str, str], None]) -> Callable[..., None]:
    def command(name: str, nodes: str | None, url: str, key: str | None) -> None:
        client = AdminClient(url, key)
        try:
            chosen = targets(client, name, _split(nodes), which)
        except AdminError as exc:
            raise _fail(str(exc)) from None
        if not chosen:
            raise _fail(f"no node {'has' if which == 'have' else 'has loaded'} {name}")
        failures = run_per_node(chosen, lambda node, progress, task: call(client, node, name), f"{verb}…")
        _finish(failures, chosen, verb, name)

    return command


def _delete(client: AdminClient, node: str, model: str) -> None:
    client.call("DELETE", "/api/delete", {"model": model}, node=node)


def _unload(client: AdminClient, node: str, model: str) -> None:
    client.call("POST", "/admin/models/unload", {"model": model, "node": node}, timeout_s=300)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="The model.")],
    nodes: NodesOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Delete a model from the nodes (default: every node that has it)."""
    _simple("delete", "have", _delete)(name, nodes, url, key)


@app.command()
def warm(
    name: Annotated[str, typer.Argument(help="The model.")],
    keep_alive: Annotated[
        str | None, typer.Option("--keep-alive", help="How long it stays loaded: 24h, -1 (forever), 300...")
    ] = None,
    nodes: NodesOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Load a model on the nodes (default: every node that has it), kept for --keep-alive."""

    def call(client: AdminClient, node: str, model: str) -> None:
        doc = {"model": model, "node": node, **({"keep_alive": keep_alive} if keep_alive is not None else {})}
        client.call("POST", "/admin/models/warm", doc, timeout_s=300)

    _simple("warm", "have", call)(name, nodes, url, key)


@app.command()
def unload(
    name: Annotated[str, typer.Argument(help="The model.")],
    nodes: NodesOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Unload a model from the nodes' memory (default: every node where it is loaded)."""
    _simple("unload", "loaded", _unload)(name, nodes, url, key)
