"""Every command of the runbooks (docs/runbooks/*.md, the `$ ` lines of ```console blocks) runs, in
order, against a real Corral (keys required, an admin key in CORRAL_ADMIN_KEY) in front of sim nodes
named as the runbooks name them. A block preceded by `<!-- runbook-test: skip ... -->` is not run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from procs import Proc, new_key, start_corral, start_sim, wait_for

RUNBOOKS = Path(__file__).parents[2] / "docs" / "runbooks"
# The order a new fleet goes through them; every runbook leaves the fleet serving.
ORDER = ["new-model", "rolling-update", "nodes", "incidents", "failover", "backup-restore", "disaster-recovery"]
FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05", "--parallel", "4"]
_BLOCK = re.compile(r"(<!-- runbook-test: skip[^>]*-->\s*\n)?```console\n(.*?)```", re.S)


def commands(text: str) -> tuple[list[str], int]:
    """The commands to run, and how many were skipped by a marker."""
    run: list[str] = []
    skipped = 0
    for marker, body in _BLOCK.findall(text):
        lines = [line.strip()[2:] for line in body.splitlines() if line.strip().startswith("$ ")]
        if marker:
            skipped += len(lines)
        else:
            run += lines
    return run, skipped


@dataclass
class RunbookFleet:
    env: dict[str, str]
    workdir: Path


@pytest.fixture(scope="module")
def runbook_fleet() -> Iterator[RunbookFleet]:
    procs: list[Proc] = []
    try:
        for models in (["llama3.2:1b", "qwen2.5:0.5b"], ["llama3.2:1b", "old-model:1b"], ["llama3.2:1b"]):
            procs.append(start_sim(*models, extra=FAST))
        spare = start_sim("tinyllama:1b", extra=FAST)  # the node the nodes runbook adds
        procs.append(spare)
        folder = Path(tempfile.mkdtemp(prefix="corral-runbooks-"))
        config = {
            "backends": [{"name": f"gpu-{i + 1}", "url": p.url, "parallel": 4} for i, p in enumerate(procs[:3])],
            "health": {"interval_s": 0.3, "timeout_s": 2, "rise": 1, "fall": 2},
            "routing": {"discovery_interval_s": 1},
            "auth": {"enabled": True, "store_url": f"sqlite:///{folder}/corral.db", "cache_ttl_s": 1},
        }
        corral = start_corral(config)
        procs.append(corral)
        config_path = Path(corral.config_path)  # type: ignore[attr-defined]
        key = new_key(config_path, "--name", "ops", "--role", "admin")
        headers = {"Authorization": f"Bearer {key}"}
        wait_for(
            lambda: all(n["models"] for n in httpx.get(corral.url + "/admin/models", headers=headers).json()["nodes"]),
            15,
            "every node's models discovered",
        )
        workdir = folder / "ops"
        workdir.mkdir()
        shutil.copy(RUNBOOKS / "models.example.yaml", workdir / "models.yaml")
        # `corral` as an operator types it: this interpreter's corral, whatever is installed elsewhere
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        (bin_dir / "corral").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m corral "$@"\n')
        (bin_dir / "corral").chmod(0o755)
        env = {
            **os.environ,
            "CORRAL_URL": corral.url,
            "CORRAL_ADMIN_KEY": key,
            "CORRAL_CONFIG": str(config_path),
            "NEW_NODE_URL": spare.url,
            "COLUMNS": "160",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        yield RunbookFleet(env, workdir)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_every_runbook_is_tested() -> None:
    assert sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem != "README") == sorted(ORDER)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ORDER)
def test_runbook_commands_run(runbook_fleet: RunbookFleet, name: str) -> None:
    run, skipped = commands((RUNBOOKS / f"{name}.md").read_text())
    assert run or skipped, f"{name}.md has no console commands"
    for command in run:
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", command],
            cwd=runbook_fleet.workdir,
            env=runbook_fleet.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, (
            f"{name}.md: `{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
