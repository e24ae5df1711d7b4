"""`corral models rollout NAME`: a rolling update run by Corral (app/rollout.py), followed live here:
per node drain → wait → pull → warm → check → undrain, one node at a time; `--resume` continues a
stopped one from the step where it stopped."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from corral.cli.admin_client import DEFAULT_URL, AdminClient, AdminError, KeyOpt, UrlOpt
from corral.cli.models import NodesOpt, _split, app, console, err
from corral.domain.names import normalize
from corral.domain.rollout import STEPS


def _state(client: AdminClient, model: str) -> dict[str, Any] | None:
    for state in client.call("GET", "/admin/rollouts").get("rollouts", []):
        if state["model"] == model:
            return dict(state)
    return None


def _position(state: dict[str, Any]) -> int:
    """The last step begun: the current one while running, else the last one done or the failed one."""
    nodes: list[str] = state["nodes"]
    done = len(state["done_nodes"]) * len(STEPS)
    if state["step"] is not None:
        return done + [s.value for s in STEPS].index(state["step"])
    if state["status"] == "done":
        return len(nodes) * len(STEPS) - 1
    return done - 1 if state["status"] != "failed" else done + _failed_step(state)


def _failed_step(state: dict[str, Any]) -> int:
    error = str(state.get("error") or "")
    for index, step in enumerate(STEPS):
        if error.startswith(f"{step.value} on "):
            return index
    return 0


@app.command()
def rollout(
    name: Annotated[str, typer.Argument(help="The model (tag) to re-pull across the fleet.")],
    nodes: NodesOpt = None,
    keep_alive: Annotated[str | None, typer.Option("--keep-alive", help="keep_alive of the warm step.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the stopped rollout of NAME.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between progress reads.")] = 0.2,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Re-pull a model node by node (default: every node that is up) while the others keep serving."""
    client = AdminClient(url, key)
    model = normalize(name)
    doc: dict[str, Any] = {"model": model, "resume": resume}
    if _split(nodes):
        doc["nodes"] = _split(nodes)
    if keep_alive is not None:
        doc["keep_alive"] = keep_alive
    try:
        state = client.call("POST", "/admin/rollouts", doc)
        console.print(f"rollout of {model} on {', '.join(state['nodes'])}{' (resumed)' if resume else ''}")
        shown = _position(state) - 1  # the last step printed, counted over the whole rollout
        while True:
            state = _state(client, model) or state
            reached = _position(state)
            for position in range(shown + 1, reached + 1):
                node, step = state["nodes"][position // len(STEPS)], STEPS[position % len(STEPS)]
                console.print(f"  {node}: {step.value} ({position % len(STEPS) + 1}/{len(STEPS)})")
            shown = max(shown, reached)
            if not state["running"]:
                break
            time.sleep(poll)
    except AdminError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if state["status"] != "done":
        err.print(f"[bold red]rollout stopped:[/] {state['error'] or 'interrupted (Corral restarted?)'}")
        err.print(
            f"node {state['node']} stays drained, the others serve; fix it, then run "
            f"`corral models rollout {model} --resume`"
        )
        raise typer.Exit(1)
    console.print(f"rollout of {model} done on {', '.join(state['done_nodes'])}")
