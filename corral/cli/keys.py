"""`corral keys`: create, list, revoke and rotate API keys in the configured key store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from corral.adapters.keystore import KeyExists, KeyNotFound, KeySpec, SqlKeyStore
from corral.app.auth import spec_from
from corral.cli.options import ConfigOpt, load_or_exit
from corral.domain.errors import InvalidRequest
from corral.domain.groups import format_selector

app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored hashed in auth.store_url).")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _run(config: Path | None, action: Callable[[SqlKeyStore], Awaitable[T]]) -> T:
    settings = load_or_exit(config)

    async def main() -> T:
        store = SqlKeyStore(settings.auth.store_url)
        try:
            await store.migrate()
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except KeyNotFound as exc:
        err.print(f"[bold red]error:[/] no key named {exc}")
        raise typer.Exit(1) from None
    except KeyExists as exc:
        err.print(f"[bold red]error:[/] a key named {exc} exists already")
        raise typer.Exit(1) from None


@app.command()
def create(
    name: Annotated[str, typer.Option(help="A unique name for the key.")],
    role: Annotated[str, typer.Option(help="user or admin.")] = "user",
    models: Annotated[str, typer.Option(help="Allowed models, comma-separated globs.")] = "*",
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests at once.")] = None,
    priority: Annotated[int, typer.Option(help="Priority class in the admission queue.")] = 0,
    expires: Annotated[str | None, typer.Option(help="Expiry, an ISO date (2027-01-31).")] = None,
    nodes: Annotated[
        str | None, typer.Option(help="Node group the key is limited to: labels, e.g. team=search,pool=gpu.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; the key itself is printed once, alone on the last line."""
    try:
        spec: KeySpec = spec_from(
            {
                "name": name,
                "role": role,
                "models": models,
                "rpm": rpm,
                "tpm": tpm,
                "max_concurrency": max_concurrency,
                "priority": priority,
                "expires": expires,
                "nodes": nodes,
            }
        )
    except InvalidRequest as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    record, plaintext = _run(config, lambda store: store.create(spec, time.time()))
    console.print(
        f"created key [bold]{record.name}[/] ({record.spec.role.value}, prefix {record.prefix}); "
        "store it now, it is not shown again:"
    )
    typer.echo(plaintext)


@app.command("list")
def list_keys(
    config: ConfigOpt = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys (never the keys themselves)."""
    records = _run(config, lambda store: store.list(include_revoked=all_keys))
    table = Table()
    for column in ("name", "prefix", "role", "models", "nodes", "rpm", "tpm", "concurrency", "expires", "state"):
        table.add_column(column)
    for r in records:
        s = r.spec
        expires = datetime.fromtimestamp(s.expires_at).date().isoformat() if s.expires_at else "-"
        state = "revoked" if r.revoked_at else ("expired" if not r.active(time.time()) else "active")
        table.add_row(
            s.name,
            r.prefix,
            s.role.value,
            ",".join(s.models),
            format_selector(s.nodes) or "-",
            str(s.rpm or "-"),
            str(s.tpm or "-"),
            str(s.max_concurrency or "-"),
            expires,
            state,
        )
    console.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")], config: ConfigOpt = None) -> None:
    """Revoke a key: every replica refuses it within auth.cache_ttl_s."""
    _run(config, lambda store: store.revoke(name, time.time()))
    console.print(f"revoked key [bold]{name}[/]")


@app.command()
def rotate(name: Annotated[str, typer.Argument(help="The key's name.")], config: ConfigOpt = None) -> None:
    """Replace a key's secret (same name and limits); the new key is printed alone on the last line."""
    record, plaintext = _run(config, lambda store: store.rotate(name, time.time()))
    console.print(f"rotated key [bold]{record.name}[/] (new prefix {record.prefix}); the old key no longer works:")
    typer.echo(plaintext)
