"""`corral backup create|verify|restore`: what a gateway needs to come back after losing its machine.

A backup holds the configuration file, a consistent copy of the database (keys, audit records, and any
table a migration adds, such as fleet state) and the model inventory (per node: names, digests and
Modelfiles, read through a running Corral). Never model weights: restore pulls them again. See
docs/backup.md.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral import __version__
from corral.adapters import db_snapshot
from corral.adapters.backup_files import (
    CONFIG_FILE,
    MODELS_FILE,
    BackupInvalid,
    private_folder,
    verify,
    write_manifest,
)
from corral.cli.admin_client import KeyOpt
from corral.cli.backup_client import CorralClient, CorralUnreachable, UrlOpt, corral_url
from corral.cli.backup_restore import restore_command
from corral.cli.options import ConfigOpt, load_or_exit

app = typer.Typer(no_args_is_help=True, help="Back up and restore config, keys, fleet state and the model inventory.")
console = Console()
err = Console(stderr=True)


def _models(client: CorralClient) -> dict[str, Any]:
    status = client.status()
    nodes: dict[str, list[dict[str, Any]]] = {}
    for node, models in client.node_models(status).items():
        entries = []
        for model, digest in sorted(models.items()):
            shown = client.show(node, model)
            if shown is None:
                err.print(f"[yellow]warning:[/] {node}: {model}: no Modelfile (the node takes no requests now)")
            modelfile = None if shown is None else shown.get("modelfile", "")
            entries.append({"name": model, "digest": digest, "modelfile": modelfile})
        nodes[node] = entries
    return {"nodes": nodes}


@app.command()
def create(
    folder: Annotated[Path, typer.Argument(help="A new (or empty) folder to write the backup into.")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    no_models: Annotated[bool, typer.Option("--no-models", help="Skip the model inventory (no Corral).")] = False,
) -> None:
    """Write a backup: config, a consistent database copy, the model inventory, manifest.json with SHA-256s."""
    started = time.monotonic()
    settings = load_or_exit(config)
    try:
        private_folder(folder)
    except (FileExistsError, OSError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    manifest: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corral_version": __version__,
        "config": None,
        "models": None,
    }
    if config is not None:
        shutil.copyfile(config, folder / CONFIG_FILE)
        manifest["config"] = {"file": CONFIG_FILE, "source": str(config.resolve())}
    try:
        written, counts, revision = asyncio.run(db_snapshot.snapshot(settings.auth.store_url, folder))
    except Exception as exc:  # any database failure: the message names it, the backup is not written
        err.print(f"[bold red]error:[/] cannot copy the database (auth.store_url): {exc}")
        raise typer.Exit(1) from None
    dialect = "sqlite" if written == db_snapshot.SNAPSHOT_FILE else "postgresql"
    manifest["database"] = {"dialect": dialect, "written": written, "revision": revision, "tables": counts}
    if not no_models:
        client = CorralClient(corral_url(settings, url), api_key)
        try:
            inventory = _models(client)
        except CorralUnreachable as exc:
            err.print(f"[bold red]error:[/] {exc}\n(use --no-models to back up without the model inventory)")
            raise typer.Exit(1) from None
        finally:
            client.close()
        (folder / MODELS_FILE).write_text(json.dumps(inventory, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest["models"] = {
            "file": MODELS_FILE,
            "nodes": {node: len(entries) for node, entries in inventory["nodes"].items()},
        }
    out = write_manifest(folder, manifest)
    table = Table(title=f"backup {folder}")
    table.add_column("part")
    table.add_column("content")
    table.add_row("config", CONFIG_FILE if manifest["config"] else "- (no --config file)")
    table.add_row("database", f"{dialect}, revision {revision}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    if manifest["models"]:
        table.add_row("models", ", ".join(f"{n}: {c}" for n, c in manifest["models"]["nodes"].items()) or "-")
    table.add_row("files", f"{len(out['files'])} with SHA-256 in manifest.json")
    console.print(table)
    console.print(f"done in {time.monotonic() - started:.2f} s")


@app.command("verify")
def verify_command(folder: Annotated[Path, typer.Argument(help="The backup folder.")]) -> None:
    """Check a backup: manifest readable, every listed file present with its SHA-256 (non-zero exit if not)."""
    try:
        manifest = verify(folder)
    except BackupInvalid as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{folder}: OK ({len(manifest['files'])} files, created {manifest.get('created_at')})")


app.command("restore")(restore_command)
