"""`corral models ...` and `corral nodes ...` against a real Corral in front of `corral sim` nodes:
drift in the matrix, placement sync that converges, rolling updates under load, drain --wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from procs import Proc, start_corral, start_sim, wait_for

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05", "--parallel", "4"]


def corral_cli(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def inventory(corral: Proc) -> dict[str, dict[str, dict[str, Any]]]:
    """node -> model -> its entry, from GET /admin/models."""
    data = httpx.get(corral.url + "/admin/models", timeout=5).json()
    return {n["name"]: {m["model"]: m for m in n["models"]} for n in data["nodes"]}


def node_state(corral: Proc, name: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{corral.url}/admin/backends/{name}", timeout=5).json()
    return data


class Fleet3:
    def __init__(self, corral: Proc, sims: dict[str, Proc], config: dict[str, Any]) -> None:
        self.corral = corral
        self.sims = sims
        self.config = config

    def restart_corral(self) -> None:
        """A new Corral process on the same configuration and database (state in memory is gone)."""
        self.corral.stop()
        self.corral = start_corral(self.config)
        wait_for(lambda: all(inventory(self.corral)[n] for n in self.sims), 15, "models discovered again")


@pytest.fixture
def fleet3() -> Iterator[Fleet3]:
    """Three nodes with llama3.2:1b (a also qwen2.5:0.5b, b also qwen2.5:0.5b), a Corral of its own."""
    sims: dict[str, Proc] = {}
    fleet: Fleet3 | None = None
    try:
        sims["a"] = start_sim("llama3.2:1b", "qwen2.5:0.5b", extra=FAST)
        sims["b"] = start_sim("llama3.2:1b", "qwen2.5:0.5b", extra=FAST)
        sims["c"] = start_sim("llama3.2:1b", extra=FAST)
        folder = tempfile.mkdtemp(prefix="corral-models-")
        config = {
            "backends": [{"name": n, "url": p.url, "parallel": 4} for n, p in sims.items()],
            "health": {"interval_s": 0.3, "timeout_s": 2, "rise": 1, "fall": 1},
            "routing": {"discovery_interval_s": 1, "retries": 2},
            "auth": {"store_url": f"sqlite:///{folder}/corral.db"},
        }
        corral = start_corral(config)
        wait_for(lambda: all(inventory(corral)[n] for n in sims), 15, "models discovered on every node")
        fleet = Fleet3(corral, sims, config)
        yield fleet
    finally:
        for proc in [fleet.corral if fleet else None, *sims.values()]:
            if proc is not None:
                proc.stop()


def test_models_list_shows_drift(fleet3: Fleet3) -> None:
    url = fleet3.corral.url
    # b's llama3.2:1b becomes a copy of another model: same name, different digest.
    copied = httpx.post(
        url + "/api/copy",
        headers={"X-Corral-Node": "b"},
        json={"source": "qwen2.5:0.5b", "destination": "llama3.2:1b"},
        timeout=10,
    )
    assert copied.status_code == 200
    data = httpx.get(url + "/admin/models", timeout=5).json()
    assert set(data["drift"]) == {"llama3.2:1b"}
    assert data["drift"]["llama3.2:1b"]["a"] != data["drift"]["llama3.2:1b"]["b"]
    listed = corral_cli(url, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "DRIFT" in listed.stdout
    assert "drift: llama3.2:1b differs between nodes" in listed.stdout
    assert "qwen2.5:0.5b" in listed.stdout


def test_pull_warm_unload_delete_per_node_and_a_failing_node(fleet3: Fleet3) -> None:
    url = fleet3.corral.url
    pulled = corral_cli(url, "models", "pull", "gemma3:1b", "--nodes", "a,b")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    inv = inventory(fleet3.corral)
    assert "gemma3:1b" in inv["a"] and "gemma3:1b" in inv["b"] and "gemma3:1b" not in inv["c"]
    warmed = corral_cli(url, "models", "warm", "gemma3:1b", "--keep-alive", "-1")
    assert warmed.returncode == 0, warmed.stdout + warmed.stderr
    assert inventory(fleet3.corral)["a"]["gemma3:1b"]["loaded"]
    unloaded = corral_cli(url, "models", "unload", "gemma3:1b")
    assert unloaded.returncode == 0
    assert not inventory(fleet3.corral)["a"]["gemma3:1b"]["loaded"]
    # a node without the model fails the delete; the other succeeds; the exit code says so
    deleted = corral_cli(url, "models", "delete", "gemma3:1b", "--nodes", "a,c")
    assert deleted.returncode == 1
    assert "c:" in deleted.stderr and "not found" in deleted.stderr
    assert "gemma3:1b" not in inventory(fleet3.corral)["a"]
    # a registry miss on pull: a clear per-node failure
    missing = corral_cli(url, "models", "pull", "does-not-exist:1b", "--nodes", "a")
    assert missing.returncode == 1 and "file does not exist" in missing.stderr


def test_sync_plan_apply_converge_and_a_second_apply_does_nothing(fleet3: Fleet3, tmp_path: Path) -> None:
    url = fleet3.corral.url
    placement = tmp_path / "models.yaml"
    placement.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "llama3.2:1b": {"nodes": ["a", "b", "c"], "keep_alive": "24h"},
                    "qwen2.5:0.5b": {"nodes": ["a"]},
                    "gemma3:1b": {"nodes": ["c"]},
                }
            }
        )
    )
    planned = corral_cli(url, "models", "sync", str(placement), "--plan")
    assert planned.returncode == 0, planned.stderr
    assert [line.strip() for line in planned.stdout.splitlines()] == [
        "5 change(s):",
        "warm llama3.2:1b on a with keep_alive 24h",
        "warm llama3.2:1b on b with keep_alive 24h",
        "delete qwen2.5:0.5b on b",
        "pull gemma3:1b on c",
        "warm llama3.2:1b on c with keep_alive 24h",
    ]
    assert inventory(fleet3.corral)["b"].get("qwen2.5:0.5b") is not None  # --plan changed nothing

    # traffic keeps flowing while the apply drains b for its delete
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False,
                                                       "options": {"num_predict": 3}})  # fmt: skip
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        applied = corral_cli(url, "models", "sync", str(placement), "--apply")
    finally:
        stop.set()
        worker.join(30)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "drained b" in applied.stdout and "undrained b" in applied.stdout
    assert "drained a" not in applied.stdout  # no delete on a: never drained
    assert errors == []
    inv = inventory(fleet3.corral)
    assert "qwen2.5:0.5b" in inv["a"] and "qwen2.5:0.5b" not in inv["b"] and "gemma3:1b" in inv["c"]
    assert all(inv[n]["llama3.2:1b"]["loaded"] for n in "abc")
    assert all(node_state(fleet3.corral, n)["state"] == "up" for n in "abc")

    again = corral_cli(url, "models", "sync", str(placement), "--apply")
    assert again.returncode == 0
    assert "in sync: nothing to change" in again.stdout and "applied" not in again.stdout


def test_sync_refuses_a_bad_file_naming_the_field(fleet3: Fleet3, tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  llama3.2:1b: {nodes: [a], keep_alive: forever}\n")
    result = corral_cli(fleet3.corral.url, "models", "sync", str(bad), "--plan")
    assert result.returncode == 2 and "models.llama3.2:1b.keep_alive" in result.stderr
    ghost = tmp_path / "ghost.yaml"
    ghost.write_text("models:\n  llama3.2:1b: {nodes: [zzz]}\n")
    result = corral_cli(fleet3.corral.url, "models", "sync", str(ghost), "--apply")
    assert result.returncode == 2 and "zzz" in result.stderr


def _audit_actions(corral: Proc) -> list[dict[str, Any]]:
    path = Path(corral.config_path).parent / "audit.log"  # type: ignore[attr-defined]
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec.get("kind") == "admin":
            out.append(rec)
    return out


def test_rollout_under_steady_load_loses_no_request(fleet3: Fleet3) -> None:
    url = fleet3.corral.url
    results: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/api/chat", json={"model": "llama3.2:1b", "stream": False,
                                                   "messages": [{"role": "user", "content": "hi"}],
                                                   "options": {"num_predict": 5}})  # fmt: skip
                results.append(r.status_code)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(results) > 10, 15, "traffic flowing")
        done = corral_cli(url, "models", "rollout", "llama3.2:1b", "--keep-alive", "1h")
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rollout of llama3.2:1b done on a, b, c" in done.stdout
    assert len(results) > 20 and set(results) == {200}, {s: results.count(s) for s in set(results)}
    assert all(node_state(fleet3.corral, n)["state"] == "up" for n in "abc")

    def steps() -> list[dict[str, Any]]:
        return [r for r in _audit_actions(fleet3.corral) if r["action"] == "rollout_step"]

    wait_for(lambda: len(steps()) == 18, 10, "an audit record per step")  # 3 nodes × 6 steps
    assert [s["detail"]["step"] for s in steps()[:6]] == ["drain", "wait", "pull", "warm", "check", "undrain"]


def test_rollout_aborts_on_a_failed_check_and_resumes(fleet3: Fleet3) -> None:
    url = fleet3.corral.url
    # b answers every generation with a 500: its check fails after the pull
    httpx.post(fleet3.sims["b"].url + "/_sim/faults", json={"error_rate": 1.0}, timeout=5)
    failed = corral_cli(url, "models", "rollout", "llama3.2:1b")
    assert failed.returncode == 1
    assert "check on b" in failed.stderr and "--resume" in failed.stderr
    assert node_state(fleet3.corral, "a")["state"] == "up"  # done before b
    assert node_state(fleet3.corral, "b")["state"] == "draining"  # the failed node stays out
    assert node_state(fleet3.corral, "c")["state"] == "up"  # never touched
    # the fleet keeps serving meanwhile
    for _ in range(5):
        r = httpx.post(url + "/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False}, timeout=30)
        assert r.status_code == 200
    rollouts = httpx.get(url + "/admin/rollouts", timeout=5).json()["rollouts"]
    assert rollouts[0]["status"] == "failed" and rollouts[0]["node"] == "b" and rollouts[0]["step"] is None

    # Corral restarts meanwhile: the drain (in memory) is gone, the rollout's state (in the database) is not
    fleet3.restart_corral()
    url = fleet3.corral.url
    assert node_state(fleet3.corral, "b")["state"] == "up"
    httpx.post(fleet3.sims["b"].url + "/_sim/reset", json={}, timeout=5)
    resumed = corral_cli(url, "models", "rollout", "llama3.2:1b", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "b: check" in resumed.stdout and "a: drain" not in resumed.stdout  # from the step that failed
    assert all(node_state(fleet3.corral, n)["state"] == "up" for n in "abc")
    assert corral_cli(url, "models", "rollout", "llama3.2:1b", "--resume").returncode == 1  # nothing to resume


def test_drain_wait_waits_for_an_in_flight_stream() -> None:
    sim = start_sim("llama3.2:1b", extra=["--tokens-per-second", "25", "--load-seconds", "0.05"])
    corral = start_corral({"backends": [{"name": "a", "url": sim.url}]})
    try:
        wait_for(lambda: inventory(corral)["a"], 15, "models discovered")
        finished: list[float] = []

        def stream() -> None:
            body = {"model": "llama3.2:1b", "prompt": "x", "options": {"num_predict": 50}}
            with httpx.stream("POST", corral.url + "/api/generate", json=body, timeout=30) as r:
                for _ in r.iter_lines():
                    pass
            finished.append(time.monotonic())

        t = threading.Thread(target=stream)
        t.start()
        wait_for(lambda: node_state(corral, "a")["in_flight"] == 1, 10, "the stream in flight")
        drained = corral_cli(corral.url, "nodes", "drain", "a", "--wait")
        returned = time.monotonic()
        t.join(30)
        assert drained.returncode == 0, drained.stderr
        assert finished and finished[0] <= returned  # --wait returned only after the stream ended
        assert "is idle" in drained.stdout
        assert node_state(corral, "a")["state"] == "draining"
        assert corral_cli(corral.url, "nodes", "undrain", "a").returncode == 0
        assert node_state(corral, "a")["state"] == "up"
    finally:
        corral.stop()
        sim.stop()


def test_preload_warms_a_node_when_it_comes_up_and_after_a_restart(tmp_path: Path) -> None:
    sim = start_sim("llama3.2:1b", "qwen2.5:0.5b", extra=FAST)
    placement = tmp_path / "models.yaml"
    placement.write_text("models:\n  qwen2.5:0.5b: {nodes: [a], keep_alive: '-1'}\n")
    config = {
        "backends": [{"name": "a", "url": sim.url, "preload": ["llama3.2:1b"]}],
        "health": {"interval_s": 0.2, "timeout_s": 1, "rise": 1, "fall": 1},
        "models": {"placement_file": str(placement), "preload_keep_alive": "24h"},
    }
    corral = start_corral(config)
    try:

        def loaded() -> set[str]:
            return set(httpx.get(sim.url + "/_sim/stats", timeout=2).json()["loaded"])

        wait_for(lambda: loaded() == {"llama3.2:1b", "qwen2.5:0.5b"}, 15, "both models warmed at start")
        port = sim.port
        sim.stop()
        wait_for(lambda: node_state(corral, "a")["state"] == "down", 10, "node seen down")
        sim = start_sim("llama3.2:1b", "qwen2.5:0.5b", port=port, extra=FAST)
        wait_for(lambda: loaded() == {"llama3.2:1b", "qwen2.5:0.5b"}, 15, "both models warmed after the restart")
    finally:
        corral.stop()
        sim.stop()


def test_admin_model_calls_name_the_bad_field(fleet3: Fleet3) -> None:
    url = fleet3.corral.url
    cases = [
        ("/admin/models/warm", {"node": "a"}, 400, "model is required"),
        ("/admin/models/warm", {"model": "llama3.2:1b"}, 400, "node is required"),
        ("/admin/models/warm", {"model": "llama3.2:1b", "node": "zzz"}, 404, "no node named 'zzz'"),
        ("/admin/models/warm", {"model": "llama3.2:1b", "node": "a", "keep_alive": "soon"}, 400, "keep_alive"),
        ("/admin/models/explode", {"model": "llama3.2:1b", "node": "a"}, 404, "warm, unload, check"),
        ("/admin/models/warm", {"model": "nope:1b", "node": "a"}, 502, "node a"),
        ("/admin/rollouts", {"model": "llama3.2:1b", "nodes": "a"}, 400, "nodes"),
        ("/admin/rollouts", {"model": "llama3.2:1b", "nodes": ["zzz"]}, 404, "zzz"),
        ("/admin/rollouts", {"model": "llama3.2:1b", "resume": True}, 400, "no stopped rollout"),
    ]
    for path, body, status, text in cases:
        reply = httpx.post(url + path, json=body, timeout=30)
        assert reply.status_code == status, (path, body, reply.text)
        assert text in reply.json()["error"], (path, body, reply.text)
    bad_json = httpx.post(url + "/admin/models/warm", content=b"{", timeout=5)
    assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]


def test_config_check_and_serve_refuse_a_bad_placement_file(tmp_path: Path) -> None:
    placement = tmp_path / "models.yaml"
    placement.write_text("models:\n  llama3.2:1b: {nodes: a}\n")
    config = tmp_path / "corral.yaml"
    config.write_text(yaml.safe_dump({"models": {"placement_file": str(placement)}}))
    for args in (["config", "check", str(config)], ["serve", "--config", str(config), "--port", "1"]):
        result = corral_cli("http://127.0.0.1:1", *args, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "models.placement_file" in result.stderr and "models.llama3.2:1b.nodes" in result.stderr
