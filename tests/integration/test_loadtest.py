"""`corral loadtest` against real `corral sim` nodes: what it counts is what the node served, its
percentiles match a latency the node injects, open-loop mode shows the queueing a slow node causes, a
ramp finds the rate where TTFT breaks its bound, and its JSON and PNG are well-formed."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from procs import Proc, free_port, sim_stats, start_sim, wait_for

MODEL = "bench:1b"


def loadtest(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "loadtest", *args], capture_output=True, text=True, timeout=timeout
    )


def report_of(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    done = loadtest(*args, "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.fixture(scope="module")
def fast() -> Iterator[Proc]:
    sim = start_sim(MODEL, extra=["--tokens-per-second", "2000", "--load-seconds", "0", "--parallel", "8"])
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def slow() -> Iterator[Proc]:
    """One slot generating 100 tokens/s: 5-token answers take 50 ms, so it serves about 20 per second."""
    sim = start_sim(MODEL, extra=["--tokens-per-second", "100", "--load-seconds", "0", "--parallel", "1"])
    yield sim
    sim.stop()


@pytest.fixture
def node(fast: Proc) -> Iterator[Proc]:
    httpx.post(fast.url + "/_sim/reset", timeout=5)
    yield fast
    httpx.post(fast.url + "/_sim/reset", timeout=5)


@pytest.mark.parametrize(("api", "route"), [("ollama", "/api/chat"), ("openai", "/v1/chat/completions")])
@pytest.mark.parametrize("stream", [False, True])
def test_counts_match_what_the_node_served(node: Proc, tmp_path: Path, api: str, route: str, stream: bool) -> None:
    httpx.post(node.url + "/_sim/faults", json={"error_rate": 0.2}, timeout=5)
    args = ["--url", node.url, "--api", api, "--model", MODEL, "--requests", "120", "--concurrency", "6"]
    report = report_of(tmp_path, *args, "--max-tokens", "7", *(["--stream"] if stream else []))
    stats = sim_stats(node)
    served = stats["requests"][route]
    assert report["requests"]["total"] == served == 120
    assert report["requests"]["errors_by_kind"] == {"500": stats["injected_errors"]}
    assert report["requests"]["ok"] == 120 - stats["injected_errors"] > 0
    assert report["output_tokens"]["total"] == stats["tokens"] == 7 * report["requests"]["ok"]
    assert "simulated failure" in report["requests"]["error_samples"]["500"][0]
    if stream:  # every token frame was seen: 6 gaps between 7 tokens per answer
        assert report["inter_token_latency_s"]["count"] == 6 * report["requests"]["ok"]


def test_percentiles_match_an_injected_latency(node: Proc, tmp_path: Path) -> None:
    # 100 ms before the first byte, then 5 tokens at 20/s: TTFT ~150 ms, gaps ~50 ms, whole answer ~350 ms
    httpx.post(node.url + "/_sim/faults", json={"latency_ms": 100, "tokens_per_second": 20}, timeout=5)
    args = ["--url", node.url, "--model", MODEL, "--stream", "--max-tokens", "5", "--requests", "32"]
    report = report_of(tmp_path, *args, "--concurrency", "8")
    ttft, latency, itl = report["ttft_s"], report["latency_s"], report["inter_token_latency_s"]
    assert report["requests"]["ok"] == 32
    # Never faster than what the node waits, but for its timers' slack: on uvloop a timer counts from the
    # loop's cached time, taken when its iteration began, so it can fire a fraction of a millisecond early
    # (0.4 ms seen on a busy machine). A client that measured from the wrong moment would be off by far more.
    slack = 0.005
    assert ttft["min"] >= 0.150 - slack and ttft["p50"] == pytest.approx(0.150, abs=0.03) and ttft["p99"] < 0.3
    assert latency["min"] >= 0.350 - slack and latency["p50"] == pytest.approx(0.350, abs=0.05)
    assert latency["p99"] < 0.6
    assert itl["count"] == 32 * 4 and itl["p50"] == pytest.approx(0.050, abs=0.01)
    assert report["output_tokens_per_s_per_request"]["p50"] == pytest.approx(20, rel=0.2)


def test_open_loop_reports_the_queueing_a_slow_node_causes(slow: Proc, tmp_path: Path) -> None:
    common = ["--url", slow.url, "--model", MODEL, "--max-tokens", "5"]
    closed = report_of(tmp_path, *common, "--concurrency", "1", "--requests", "15")
    service = closed["latency_s"]["p50"]
    assert service == pytest.approx(0.05, abs=0.02)  # one request at a time: no queue, the service time
    # Poisson arrivals at twice what the node serves: the queue grows for the whole run
    opened = report_of(tmp_path, *common, "--rate", "40/s", "--duration", "2s", "--seed", "3")
    assert opened["requests"]["ok"] == opened["requests"]["total"] > 50
    # requests left on time, so the waiting was at the node: the generator's own lag (tens of ms on a
    # loaded machine) is a small part of what the requests waited
    assert opened["send_lag_s"]["p99"] < opened["latency_s"]["p50"] / 5
    assert opened["latency_s"]["p50"] > 5 * service and opened["latency_s"]["max"] > 1.0
    rows = [r for r in opened["timeline"] if r["latency_p50_s"] is not None]
    # by the second requests were due: the backlog grows ~20/s, so each second waits ~0.5 s longer
    assert rows[-1]["latency_p50_s"] > rows[0]["latency_p50_s"] + 0.3
    assert closed["settings"]["mode"] == "closed" and opened["settings"]["mode"] == "open"


def test_ramp_finds_where_p99_ttft_breaks_the_bound(slow: Proc, tmp_path: Path) -> None:
    args = ["--url", slow.url, "--model", MODEL, "--stream", "--max-tokens", "5", "--rate", "10:80/s"]
    report = report_of(tmp_path, *args, "--ttft-bound", "300ms", "--duration", "1s", "--seed", "1")
    ramp = report["ramp"]
    best, over = ramp["max_rate_within_bound_per_s"], ramp["first_rate_over_bound_per_s"]
    # the node serves ~20/s: well below that TTFT is a few ms; above it, the queue grows without end
    assert best is not None and over is not None
    assert 10 <= best < over <= 55
    for step in ramp["steps"]:
        p99 = step["p99_ttft_s"]
        assert step["within_bound"] == (p99 is not None and p99 <= 0.3)
    assert report["requests"]["total"] == sum(s["report"]["requests"]["total"] for s in ramp["steps"])


def test_json_and_plot_files_are_well_formed(node: Proc, tmp_path: Path) -> None:
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    args = ["--url", node.url, "--model", MODEL, "--stream", "--max-tokens", "3", "--requests", "40"]
    done = loadtest(*args, "--json", str(out), "--plot", str(png))
    assert done.returncode == 0, done.stderr
    assert "TTFT" in done.stdout and "inter-token" in done.stdout  # the end table
    report = json.loads(out.read_text())
    for key in ("latency_s", "ttft_s", "inter_token_latency_s", "output_tokens_per_s_per_request"):
        assert set(report[key]) >= {"count", "mean", "p50", "p90", "p95", "p99", "max"}
    assert report["throughput"]["requests_per_s"] > 0 and report["throughput"]["output_tokens_per_s"] > 0
    assert sum(b[2] for b in report["histograms"]["latency_s"]) == 40
    assert sum(r["completed"] for r in report["timeline"]) == 40
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert struct.unpack(">II", data[16:24]) == (1200, 800)  # the IHDR chunk: four panels at 100 dpi


def test_ctrl_c_ends_the_run_and_reports_what_finished(node: Proc, tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    concurrency = 4
    args = ["--url", node.url, "--model", MODEL, "--max-tokens", "2", "--duration", "60s", "--json", str(out)]
    args += ["--concurrency", str(concurrency)]
    proc = subprocess.Popen([sys.executable, "-m", "corral", "loadtest", *args], stdout=subprocess.PIPE, text=True)

    def arrived() -> int:
        return int(sim_stats(node)["requests"].get("/api/chat", 0))

    try:
        wait_for(lambda: arrived() >= 20 + concurrency, 20, "requests at the node")
        before = arrived()  # all but the (at most) `concurrency` in flight have been answered
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    report = json.loads(out.read_text())
    assert report["interrupted"] and report["requests"]["errors"] == 0
    assert before - concurrency <= report["requests"]["ok"] <= arrived()
    assert "interrupted" in stdout


def test_plot_without_matplotlib_says_how_to_get_it(node: Proc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = CliRunner().invoke(app, ["loadtest", "--url", node.url, "--model", MODEL, "--plot", "out.png"])
    assert result.exit_code == 1
    assert "pip install 'corral[plot]'" in result.output
    assert sim_stats(node)["requests"].get("/api/chat", 0) == 0  # refused before any load


def test_unreachable_server_and_every_request_failing(node: Proc) -> None:
    down = CliRunner().invoke(app, ["loadtest", "--url", f"http://127.0.0.1:{free_port()}", "--model", MODEL])
    assert down.exit_code == 1 and "cannot connect" in down.output
    missing = CliRunner().invoke(app, ["loadtest", "--url", node.url, "--model", "nope:1b", "--requests", "3"])
    assert missing.exit_code == 1 and "every request failed" in missing.output
    assert "404" in missing.output and "model 'nope:1b' not found" in missing.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--concurrency", "4", "--rate", "5/s"], "not both"),
        (["--rate", "fast"], "--rate"),
        (["--rate", "50:10/s"], "ramp must go up"),
        (["--rate", "1:10/s", "--duration", "5s"], "too few for a p99"),
        (["--duration", "10x"], "--duration"),
        (["--duration", "5s", "--requests", "5"], "not both"),
        (["--ttft-bound", "1s"], "ramp"),
        (["--api", "grpc"], "--api"),
        (["--url", "ftp://h"], "--url"),
        (["--timeout", "0s"], "--timeout"),
        (["--prompts", "/nonexistent/prompts.txt"], "--prompts"),
        (["--json", "/nonexistent/dir/out.json"], "does not exist"),
        (["--key", "a\nb"], "--key"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], says: str) -> None:
    base = {"--url": "http://127.0.0.1:9", "--model": MODEL}
    for flag, value in base.items():
        if flag not in args:
            args = [flag, value, *args]
    result = CliRunner().invoke(app, ["loadtest", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
