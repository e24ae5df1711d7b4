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
        shown = None
        while True:
            state = _state(client, model) or state
            where = (state["node"], state["step"])
            if where != shown and state["step"] is not None:
                index = STEPS.index(next(s for s in STEPS if s.value == state["step"])) + 1
                console.print(f"  {state['node']}: {state['step']} ({index}/{len(STEPS)})")
                shown = where
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
