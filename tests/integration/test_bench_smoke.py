"""Each benchmark script runs end to end for a moment, so that none of them rots unnoticed. These are
not measurements: the runs are too short for their figures to mean anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx: scripts/install.sh --system")


def test_decision_time() -> None:
    out = bench("bench.decision_time").stdout
    assert "| nodes | case | least-connections µs | model-aware µs | snapshot µs |" in out
    assert "| 256 | no free slot |" in out and "| 256 | cold |" in out


def test_policy_sim_quick(tmp_path: Path) -> None:
    bench("bench.policy_sim", "--quick", "--out", str(tmp_path))
    assert json.loads((tmp_path / "policy_sim.json").read_text())
    assert (tmp_path / "policy_sim.png").stat().st_size > 0


def test_policy_sim_generated_draws_report(tmp_path: Path) -> None:
    args = ("--set", "tuning", "--draws", "2", "--duration", "20", "--workers", "1", "--out", str(tmp_path))
    bench("bench.policy_sim.generate", *args)
    rows = json.loads((tmp_path / "draws-tuning.json").read_text())
    assert sorted(rows) == ["0", "1"] and all({"least-connections", "model-aware"} <= set(r) for r in rows.values())
    report = (tmp_path / "draws-tuning.md").read_text()
    assert "| kind | draws | median p99 ratio |" in report and (tmp_path / "draws-tuning.png").stat().st_size > 0


def test_policy_sim_overload_report(tmp_path: Path) -> None:
    # Tuning draw 0 has an overload phase: one draw, one virtual minute.
    args = ("--set", "tuning", "--draws", "1", "--duration", "60", "--workers", "1", "--out", str(tmp_path))
    out = bench("bench.policy_sim.recovery", *args).stdout
    assert "| draw | nodes | models | load | steady p95 LC / MA / +shed |" in out and "| 0 | 40 | 30 |" in out
    assert "| `shed_after_s` 30 s |" in out  # model-aware shedding by estimated wait, per bound
    assert "within a minute of the overload's end" in (tmp_path / "recovery-tuning.md").read_text()


def test_policy_sim_speed_a_short_run() -> None:
    out = bench("bench.policy_sim.speed", "--nodes", "8", "--models", "6", "--duration", "20").stdout
    assert "| least-connections |" in out and "| model-aware |" in out


@needs_nginx
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk: scripts/install.sh --system")
def test_proxy_overhead_one_second_a_point(tmp_path: Path) -> None:
    out = tmp_path / "proxy.json"
    bench("bench.proxy_overhead", "--seconds", "1", "--out", str(out))
    results = json.loads(out.read_text())
    own = {"direct", "nginx", "corral", "corral, all features"}
    assert set(results["non_stream"]) == own | {"corral on uvicorn", "corral on uvicorn, all features"}
    assert all(r["rps_c64"] > 0 for r in results["non_stream"].values())


@needs_nginx
def test_compare_half_a_second_a_point(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    paths = "direct,corral-all"  # the proxy with the most to set up (a key, limits); the others are simpler
    bench("bench.compare", "--seconds", "0.5", "--concurrency", "1,4", "--only", paths, "--out", str(out))
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results) == paths.split(",")
    for name, r in results.items():
        assert r["non_stream"]["4"]["errors"] == 0 and r["non_stream"]["4"]["rps"] > 0, name
        assert r["stream"]["16"]["errors"] == 0 and r["stream"]["16"]["chunks_per_s"] > 0, name
    assert results["corral-all"]["cpu_s_per_1k"] > 0 and results["corral-all"]["peak_rss_mb"] > 10
    assert "| corral-all |" in out.with_suffix(".md").read_text()


def test_compare_table_puts_every_path_against_litellm() -> None:
    from bench.compare_parts import table

    def path(rps: float) -> dict[str, object]:
        point = {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "chunks_per_s": 1.0}
        stream = {**point, "itl_p50_ms": 0.1, "itl_p99_ms": 0.2}
        return {"non_stream": {"1": point, "64": point}, "stream": {"16": stream}, "cpu_s_per_1k": 0.3}

    results = {"direct": path(50_000), "corral-all": path(3_000), "litellm": path(100), "litellm-granian": path(80)}
    rows = {line.split("|")[1].strip(): line.split("|") for line in table(results, [1, 64], 1).splitlines()[4:8]}
    assert "vs LiteLLM c=64" in table(results, [1, 64], 1)
    assert rows["corral-all"][10].strip() == "30x" and rows["litellm-granian"][10].strip() == "0.8x"


@needs_nginx
@pytest.mark.skipif(
    not (ROOT / ".cache" / "litellm-venv" / "bin" / "litellm").exists(),
    reason="LiteLLM not installed (bench.compare --litellm installs it into .cache/litellm-venv, ~740 MB)",
)
def test_compare_litellm_paths_half_a_second_a_point(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    args = ("--seconds", "0.5", "--concurrency", "1,4", "--only", "direct", "--litellm", "--out", str(out))
    bench("bench.compare", *args, timeout=300)
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results) == ["direct", "litellm", "litellm-granian"]
    for name in ("litellm", "litellm-granian"):
        assert results[name]["non_stream"]["4"]["errors"] == 0 and results[name]["non_stream"]["4"]["rps"] > 0
        assert results[name]["stream"]["16"]["errors"] == 0 and results[name]["stream"]["16"]["chunks_per_s"] > 0


@pytest.mark.parametrize(
    "module", ["bench.routing", "bench.routing_live", "bench.gateway_ab", "bench.backup_times", "bench.instructions"]
)
def test_long_benchmarks_start(module: str) -> None:
    # Their shortest real runs take 30-60 s (three policies, each with a fresh fleet and 1.5 s model
    # loads; a gateway under callgrind): too long for the suite, so only their start (imports and
    # flags) is checked here.
    assert "usage:" in bench(module, "--help").stdout


def test_routing_live_multi_turn_a_few_seconds(tmp_path: Path) -> None:
    out = tmp_path / "turns.md"
    args = ["--multi-turn", "--seconds", "4", "--rate", "2", "--policies", "model-aware+prefix", "--out", str(out)]
    bench("bench.routing_live", *args, timeout=180)
    assert "| model-aware+prefix |" in out.read_text() and "later turns: TTFT p50" in out.read_text()


@pytest.mark.parametrize("module", ["bench.admission_cost", "bench.body_read"])
def test_long_microbenchmarks_import(module: str) -> None:
    # They take no flags and run for 30-45 s: only that they still import what they measure is checked.
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True, timeout=60)


# Each script under bench/ and how the tests above cover it; a new one fails here until it is added.
COVERED = {
    "admission_cost": "import",
    "backup_times": "--help",
    "cache_hit": "run",
    "embed_cache": "run",
    "body_read": "import",
    "gateway_ab": "--help",
    "instructions": "--help",
    "server_path": "run",
    "compare": "run",
    "decision_time": "run",
    "policy_sim": "run",
    "proxy_overhead": "run",
    "routing": "--help",
    "routing_live": "--help",
    "routing_live_turns": "run",  # the workload of `bench.routing_live --multi-turn`
    "workers": "run",
    "limiter_cost": "run",
    "loop_stalls": "run",
    "open_streams": "run",
    "sim_prompt_cache": "run",
}
HELPERS = {"__init__", "common", "compare_parts", "asgi_edge", "stall_probe"}


def test_cache_hit_a_few_requests() -> None:
    out = bench("bench.cache_hit", "--requests", "200").stdout
    assert "| whole answer |" in out and "| NDJSON stream |" in out


def test_embed_cache_a_small_corpus() -> None:
    out = bench("bench.embed_cache", "--chunks", "32", "--embed-tps", "100000").stdout
    assert "| with cache |" in out and "speed-up of the second pass" in out


def test_sim_prompt_cache_a_short_run() -> None:
    args = ["--system-tokens", "300", "--rate", "100000", "--conversations", "2", "--turns", "2", "--rounds", "5"]
    out = bench("bench.sim_prompt_cache", *args).stdout
    assert out.count("prompt_cache:") == 5 and "| 16,000 |" in out


@needs_nginx
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk: scripts/install.sh --system")
def test_workers_one_second_a_point(tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    bench(
        "bench.workers",
        "--seconds",
        "1",
        "--workers",
        "1,2",
        "--rounds",
        "1",
        "--observations",
        "2000",
        "--out",
        str(out),
    )
    results = json.loads(out.read_text())
    assert set(results["observe_us"]) == {"memory", "multiprocess"}
    assert set(results["proxy"]) == {"1", "2", "1 at c=32"}
    assert all(r["rps"] > 0 and r["errors"] == 0 and r["cpu_s_per_1k"] > 0 for r in results["proxy"].values())


@needs_nginx
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk: scripts/install.sh --system")
def test_workers_with_every_feature_on(tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    args = ["--seconds", "1", "--workers", "2", "--rounds", "1", "--observations", "2000", "--all"]
    bench("bench.workers", *args, "--out", str(out))
    results = json.loads(out.read_text())
    assert set(results["proxy"]) == {"2", "1 at c=32"}
    # Every request carried the key and passed the limits in Redis: none refused.
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in results["proxy"].values())
    # Admissions went to Redis (its own count), at most one script call per request.
    assert all(0 < r["redis_calls_per_1k"] <= 1000 for r in results["proxy"].values())


def test_every_benchmark_script_is_smoke_tested() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")} | {
        p.parent.name for p in (ROOT / "bench").glob("*/__main__.py")
    }
    assert scripts - HELPERS == set(COVERED)


def test_server_path_a_few_requests() -> None:
    assert "µs" in bench("bench.server_path", "--requests", "200", "--trials", "1").stdout


def test_limiter_cost_a_few_admissions() -> None:
    out = bench("bench.limiter_cost", "--requests", "200", "--rounds", "1", "--redis").stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    assert {(r[1].strip(), r[2].strip()) for r in rows} == {(s, c) for s in ("memory", "redis") for c in ("1", "64")}
    assert all(float(r[3]) > 0 for r in rows)


def test_limiter_cost_one_call_by_each_way() -> None:
    out = bench("bench.limiter_cost", "--calls", "--requests", "50", "--rounds", "1").stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert len(rows) == 5 and all(float(r[3]) > 0 for r in rows)
    assert any("shipped" in r[1] for r in rows)


@needs_nginx
def test_loop_stalls_half_a_second_a_mode() -> None:
    out = bench("bench.loop_stalls", "--seconds", "0.5", "--rounds", "1", "--concurrency", "8").stdout
    assert "| default |" in out and "| tuned |" in out  # the probe's file was written and read for both


def test_open_streams_a_few_streams() -> None:
    out = bench("bench.open_streams", "--streams", "20", "--chunks", "3", "--interval", "0.05", "--ramp", "0.1").stdout
    row = next(line for line in out.splitlines() if line.startswith("| corral, all features |"))
    assert row.split("|")[3].strip() == "60" and row.split("|")[4].strip() == "0"  # every chunk relayed, no errors
    assert "added per chunk" in out
