"""`corral models sync FILE --plan|--apply`: placement as code. The plan is domain/placement.py's, from
the file and Corral's inventory; apply makes the changes one node at a time while traffic keeps flowing:
pulls and warms on a serving node, and a node is drained only while a delete on it runs (a delete
unloads the model, which would cut the requests in flight), then undrained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from corral.cli.admin_client import DEFAULT_URL, AdminClient, AdminError, KeyOpt, UrlOpt
from corral.cli.models import app, console, err, pull_on, run_per_node
from corral.cli.nodes import set_drain, wait_idle
from corral.domain.placement import Action, ActionKind, NodeInventory, PlacementError, Plan, parse_placement, plan


def inventory(data: dict[str, Any]) -> list[NodeInventory]:
    return [
        NodeInventory(
            n["name"],
            up=n["state"] != "down",
            labels=n.get("labels") or {},
            models={m["model"]: m["digest"] for m in n.get("models", [])},
            loaded=frozenset(m["model"] for m in n.get("models", []) if m["loaded"]),
        )
        for n in data.get("nodes", [])
    ]


def load(file: Path) -> Any:
    try:
        return parse_placement(yaml.safe_load(file.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[bold red]error:[/] cannot read {file}: {exc}")
        raise typer.Exit(2) from None
    except PlacementError as exc:
        err.print(f"[bold red]error:[/] {file}: {exc}")
        raise typer.Exit(2) from None


def print_plan(result: Plan) -> None:
    for name in result.skipped:
        err.print(f"[yellow]warning:[/] node {name} is down: nothing planned for it")
    if result.in_sync:
        console.print("in sync: nothing to change")
        return
    console.print(f"{len(result.actions)} change(s):")
    for action in result.actions:
        console.print(f"  {action.describe()}")


def apply_node(client: AdminClient, node: str, actions: list[Action], drain_timeout_s: float) -> None:
    for a in actions:
        if a.kind is ActionKind.PULL:
            failures = run_per_node([node], pull_on(client, a.model), f"pulling {a.model}", bar=True)
            if failures:
                raise AdminError(failures[node])
        elif a.kind is ActionKind.WARM:
            client.call("POST", "/admin/models/warm", {"model": a.model, "node": node, "keep_alive": a.keep_alive},
                        timeout_s=300)  # fmt: skip
            console.print(f"  warmed {a.model} on {node} (keep_alive {a.keep_alive})")
    deletes = [a for a in actions if a.kind is ActionKind.DELETE]
    if not deletes:
        return
    set_drain(client, node, True)
    console.print(f"  drained {node} for {len(deletes)} delete(s)")
    try:
        wait_idle(client, node, drain_timeout_s)
        for a in deletes:
            client.call("DELETE", "/api/delete", {"model": a.model}, node=node)
            console.print(f"  deleted {a.model} on {node}")
    finally:
        set_drain(client, node, False)
        console.print(f"  undrained {node}")


@app.command()
def sync(
    file: Annotated[Path, typer.Argument(help="The placement file (models.yaml).")],
    do_plan: Annotated[bool, typer.Option("--plan", help="Print the changes, make none.")] = False,
    do_apply: Annotated[bool, typer.Option("--apply", help="Make the changes, one node at a time.")] = False,
    drain_timeout: Annotated[float, typer.Option(help="Longest wait for in-flight requests before a delete.")] = 600.0,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Bring the fleet to a placement file: which models are on which nodes, which stay warm."""
    if do_plan == do_apply:
        err.print("[bold red]error:[/] give exactly one of --plan or --apply")
        raise typer.Exit(2)
    placement = load(file)
    client = AdminClient(url, key)
    try:
        result = plan(placement, inventory(client.inventory()))
    except AdminError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if result.unknown_nodes:
        err.print(f"[bold red]error:[/] {file} names nodes Corral does not have: {', '.join(result.unknown_nodes)}")
        raise typer.Exit(2)
    print_plan(result)
    if do_plan or result.in_sync:
        return
    for node, actions in result.by_node().items():
        console.print(f"[bold]{node}[/]:")
        try:
            apply_node(client, node, actions, drain_timeout)
        except AdminError as exc:
            err.print(f"[bold red]error:[/] on node {node}: {exc}; stopped (later nodes unchanged)")
            raise typer.Exit(1) from None
    console.print(f"applied {len(result.actions)} change(s)")
