"""`corral backup restore DIR --plan|--apply`: config, database rows, then the models the fleet lacks.

The backup is verified first (a corrupted one is refused before anything changes). Each part can be
chosen with --parts: on a new machine, restore `config,data` before starting Corral, then `models`
once it runs (the pulls go through it, one node at a time per X-Corral-Node, all nodes at once).
Running --apply again changes nothing that is already restored.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.adapters import db_snapshot
from corral.adapters.backup_files import CONFIG_FILE, MODELS_FILE, BackupInvalid, verify
from corral.cli.admin_client import KeyOpt
from corral.cli.backup_client import CorralClient, CorralUnreachable, UrlOpt, corral_url
from corral.cli.options import ConfigOpt, load_or_exit
from corral.domain.restore_plan import ModelPlan, plan_models

console = Console()
err = Console(stderr=True)
PARTS = ("config", "data", "models")


def _parts(value: str) -> set[str]:
    chosen = {p.strip() for p in value.split(",") if p.strip()}
    unknown = chosen - set(PARTS)
    if unknown or not chosen:
        err.print(f"[bold red]error:[/] --parts: choose from {', '.join(PARTS)} (got {value!r})")
        raise typer.Exit(2)
    return chosen


def _config(folder: Path, manifest: dict[str, Any], target: Path | None, apply: bool) -> None:
    if not manifest.get("config"):
        console.print("config: not in this backup (it was made without --config)")
        return
    if target is None:
        console.print("config: skipped (name the file to restore it to with --config)")
        return
    new = (folder / CONFIG_FILE).read_bytes()
    old = target.read_bytes() if target.exists() else None
    if old == new:
        console.print(f"config: {target} is the backed-up file already")
        return
    kept = target.with_name(target.name + ".before-restore")
    action = f"write {target}" if old is None else f"replace {target} (the current file kept as {kept.name})"
    if not apply:
        console.print(f"config: would {action}")
        return
    if old is not None:
        kept.write_bytes(old)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(new)
    os.chmod(target, 0o600)
    console.print(f"config: {action.replace('write', 'wrote', 1).replace('replace', 'replaced', 1)}; "
                  "a running Corral reads it when restarted")  # fmt: skip


def _data(folder: Path, manifest: dict[str, Any], store_url: str, apply: bool) -> None:
    rows = db_snapshot.read_snapshot(folder, manifest["database"]["written"])
    current = asyncio.run(db_snapshot.row_counts(store_url))
    table = Table(title="database " + ("(restored)" if apply else "(plan: each table's rows replaced)"))
    for column in ("table", "rows now", "rows in backup"):
        table.add_column(column)
    for name in sorted(rows):
        now = "-" if current is None or name not in current else str(current[name])
        table.add_row(name, now, str(len(rows[name])))
    if apply:
        unknown = asyncio.run(db_snapshot.restore(store_url, rows))
        for name in unknown:
            err.print(f"[yellow]warning:[/] table {name} is not in this version's schema; not restored")
    console.print(table)


def _show_plan(plan: ModelPlan) -> None:
    table = Table(title="models")
    for column in ("node", "model", "action"):
        table.add_column(column)
    for node, model in plan.pulls:
        table.add_row(node, model, "[yellow]pull[/]")
    for node, model in plan.present:
        table.add_row(node, model, "present")
    for d in plan.drift:
        table.add_row(d.node, d.model, f"[magenta]present, other digest[/] ({(d.now or '')[:12]}, backup "
                      f"{(d.backed_up or '')[:12]})")  # fmt: skip
    console.print(table)
    for node in plan.unknown_nodes:
        err.print(f"[yellow]warning:[/] node {node} is in the backup but not in the fleet; its models are skipped")


def _pull_all(client: CorralClient, pulls: tuple[tuple[str, str], ...]) -> list[str]:
    """Every node at once, its models one after another; the failures, one line each."""
    by_node: dict[str, list[str]] = {}
    for node, model in pulls:
        by_node.setdefault(node, []).append(model)
    failures: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[status]}"))  # fmt: skip
    with Progress(*columns, console=console) as progress:
        tasks = {(n, m): progress.add_task(f"{n}: {m}", total=None, status="waiting") for n, m in pulls}

        def one_node(node: str) -> None:
            for model in by_node[node]:
                task = tasks[(node, model)]

                def report(done: int, total: int, status: str, task: Any = task) -> None:
                    if total:  # status-only lines (verifying, writing manifest) keep the last figures
                        progress.update(task, completed=done, total=total, status=status)
                    else:
                        progress.update(task, status=status)

                error = client.pull(node, model, report)
                if error is None:
                    total = progress.tasks[task].total or 1
                    progress.update(task, completed=total, total=total, status="[green]done[/]")
                else:
                    progress.update(task, status=f"[red]failed: {error}[/]")
                    failures.append(f"{node}: {model}: {error}")

        with ThreadPoolExecutor(max_workers=max(1, len(by_node))) as pool:
            list(pool.map(one_node, sorted(by_node)))
    return failures


def _models(folder: Path, client: CorralClient, apply: bool, wait_auth_s: float, listed_s: float) -> list[str]:
    recorded = json.loads((folder / MODELS_FILE).read_text(encoding="utf-8"))
    backup = {node: {e["name"]: e.get("digest") for e in entries} for node, entries in recorded["nodes"].items()}
    plan = plan_models(backup, client.node_models(client.status(wait_auth_s)))
    _show_plan(plan)
    if not apply or plan.done:
        return []
    failures = _pull_all(client, plan.pulls)
    # Corral lists a node's models from its discovery reads: wait for the next one (`listed_s`).
    deadline = time.monotonic() + listed_s
    after = plan_models(backup, client.node_models(client.status()))
    while not after.done and time.monotonic() < deadline:
        time.sleep(0.2)
        after = plan_models(backup, client.node_models(client.status()))
    for node, model in after.pulls:
        if not any(f.startswith(f"{node}: {model}:") for f in failures):
            failures.append(f"{node}: {model}: pulled, but the node does not list it")
    return failures


def restore_command(
    folder: Annotated[Path, typer.Argument(help="The backup folder.")],
    plan: Annotated[bool, typer.Option("--plan", help="Show what would change; change nothing.")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Make the changes.")] = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    parts: Annotated[str, typer.Option(help="What to restore, comma-separated: config, data, models.")] = (
        "config,data,models"
    ),
) -> None:
    """Restore config, keys and fleet state, and pull the models the fleet lacks (verifies the backup first)."""
    started = time.monotonic()
    if plan == apply:
        err.print("[bold red]error:[/] choose one of --plan and --apply")
        raise typer.Exit(2)
    chosen = _parts(parts)
    try:
        manifest = verify(folder)
    except BackupInvalid as exc:
        err.print(f"[bold red]error:[/] {exc}\nnothing was restored", highlight=False)
        raise typer.Exit(1) from None
    if "config" in chosen:
        _config(folder, manifest, config, apply)
    # Before the config is written (plan), the backed-up file says where the database is.
    source = config if config is not None and config.exists() else None
    if source is None and manifest.get("config"):
        source = folder / CONFIG_FILE
    settings = load_or_exit(source)
    if "data" in chosen:
        try:
            _data(folder, manifest, settings.auth.store_url, apply)
        except Exception as exc:  # any database failure, named; the transaction left the target as it was
            err.print(f"[bold red]error:[/] cannot restore the database (auth.store_url): {exc}")
            raise typer.Exit(1) from None
    failures: list[str] = []
    if "models" in chosen and manifest.get("models"):
        client = CorralClient(corral_url(settings, url), api_key)
        try:
            # Keys restored a moment ago reach a running Corral once its key cache has expired.
            wait = settings.auth.cache_ttl_s + 2 if apply and "data" in chosen else 0.0
            listed = settings.routing.discovery_interval_s + settings.health.timeout_s + 2
            failures = _models(folder, client, apply, wait, listed)
        except CorralUnreachable as exc:
            err.print(f"[bold red]error:[/] models: {exc}\n(start Corral, then rerun with --parts models)")
            raise typer.Exit(1) from None
        finally:
            client.close()
    for line in failures:
        err.print(f"[bold red]failed:[/] {line}")
    verb = "restored" if apply else "planned"
    console.print(f"{verb} in {time.monotonic() - started:.2f} s")
    if failures:
        raise typer.Exit(1)
