"""`corral nodes`: node maintenance on a running Corral (drain, wait for in-flight work, undrain)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from corral.cli.admin_client import DEFAULT_URL, AdminClient, AdminError, KeyOpt, UrlOpt

app = typer.Typer(no_args_is_help=True, help="Node maintenance: drain and undrain nodes.")
console = Console()
err = Console(stderr=True)


def wait_idle(client: AdminClient, name: str, timeout_s: float, poll_s: float = 0.1) -> None:
    """Until the node's in-flight count is 0; AdminError when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    with console.status(f"waiting for the requests in flight on {name}") as status:
        while True:
            in_flight = int(client.backend(name).get("in_flight") or 0)
            if in_flight == 0:
                return
            if time.monotonic() >= deadline:
                raise AdminError(f"node {name} still has {in_flight} request(s) in flight after {timeout_s:g}s")
            status.update(f"waiting for {in_flight} request(s) in flight on {name}")
            time.sleep(poll_s)


def set_drain(client: AdminClient, name: str, drain: bool) -> None:
    client.call("POST", f"/admin/backends/{name}/{'drain' if drain else 'undrain'}")


@app.command()
def drain(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until its in-flight count is 0.")] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait with --wait, in seconds.")] = 600.0,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Stop sending new requests to a node; requests in flight finish."""
    client = AdminClient(url, key)
    try:
        set_drain(client, name, True)
        console.print(f"node [bold]{name}[/] is draining: no new requests go to it")
        if wait:
            wait_idle(client, name, timeout)
            console.print(f"node [bold]{name}[/] is idle: nothing in flight")
    except AdminError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None


@app.command()
def undrain(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Send requests to a drained node again."""
    try:
        set_drain(AdminClient(url, key), name, False)
    except AdminError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"node [bold]{name}[/] is serving again")
