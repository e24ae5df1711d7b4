"""Parts of bench.compare: reading a process tree's CPU and peak memory from /proc, the LiteLLM
virtual environment, and the table and chart of the results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# The newest whose proxy extra resolves from PyPI here (1.110.2's needs a `litellm-proxy` package that
# PyPI here does not have). 1.108.7 and 1.110.2 both ship LiteLLM's Rust core, but its rollout table
# (litellm/rust_bridge/catalog.py) keeps chat completions on Python: no Rust path to measure on /v1.
LITELLM = "litellm[proxy]==1.108.7"
LITELLM_VENV = Path(__file__).resolve().parents[1] / ".cache" / "litellm-venv"
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_tree_usage(roots: list[int]) -> tuple[float, int]:
    """CPU seconds used so far and the sum of peak RSS (bytes) of `roots` and every descendant
    (nginx's worker, a proxy's helper processes)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents[int(entry)], cpu[int(entry)] = stat
    tree, frontier = set(roots), list(roots)
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in tree]
        tree.update(children)
        frontier += children
    return sum(cpu.get(p, 0.0) for p in tree), sum(_peak_rss(p) for p in tree)


def litellm_python() -> Path:
    """The LiteLLM proxy's interpreter, installing it into its own venv on first use (~70 s, ~740 MB)."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print(f"installing {LITELLM} into {LITELLM_VENV} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM], check=True)
    return python


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.3g}x" if base else "–"


def table(results: dict[str, Any], concurrency: list[int], seconds: float, load: float | None = None) -> str:
    direct = results.get("direct")
    nginx = results.get("nginx")
    litellm = results.get("litellm")  # the peer on its default (uvicorn) path, when measured
    low, high = str(min(concurrency)), str(max(concurrency))
    busy = f" Machine load average at the start: {load:.1f}." if load is not None else ""
    lines = [
        f"Non-streaming `/v1/chat/completions` (node: nginx fixed body), {seconds:g} s a point, closed loop.{busy}",
        "",
        f"| path | p50 c={low} | p99 c={low} | added p50 | added p99 | "
        + " | ".join(f"req/s c={c}" for c in concurrency)
        + f" | vs direct c={high} | vs nginx c={high}"
        + (f" | vs LiteLLM c={high}" if litellm else "")
        + " | CPU s / 1k req | peak RSS |",
        "|---|---|---|---|---|" + "---|" * len(concurrency) + "---|---|---|---|" + ("---|" if litellm else ""),
    ]
    for name, r in results.items():
        ns = r["non_stream"]
        base = direct["non_stream"][low] if direct else None
        added = (
            (f"{ns[low]['p50_ms'] - base['p50_ms']:+.3f} ms", f"{ns[low]['p99_ms'] - base['p99_ms']:+.3f} ms")
            if base and name != "direct"
            else ("–", "–")
        )
        rps = [f"{ns[str(c)]['rps']:,.0f}" for c in concurrency]
        top = ns[high]["rps"]
        cpu = f"{r['cpu_s_per_1k']:.3f}" if "cpu_s_per_1k" in r else "–"
        rss = f"{r['peak_rss_mb']:.0f} MiB" if "peak_rss_mb" in r else "–"
        lines.append(
            f"| {name} | {ns[low]['p50_ms']:.3f} ms | {ns[low]['p99_ms']:.3f} ms | {added[0]} | {added[1]} | "
            + " | ".join(rps)
            + f" | {_ratio(top, direct['non_stream'][high]['rps'] if direct else None)}"
            + f" | {_ratio(top, nginx['non_stream'][high]['rps'] if nginx else None)}"
            + (f" | {_ratio(top, litellm['non_stream'][high]['rps'])}" if litellm else "")
            + f" | {cpu} | {rss} |"
        )
    lines += [
        "",
        "Streams of 64 tokens (node: corral sim, SSE), concurrency 16.",
        "",
        "| path | streams/s | relayed chunks/s | inter-token p50 | inter-token p99 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["stream"]["16"]
        lines.append(
            f"| {name} | {s['rps']:,.0f} | {s['chunks_per_s']:,.0f} | {s['itl_p50_ms']:.3f} ms | "
            f"{s['itl_p99_ms']:.3f} ms | {s['errors']} |"
        )
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], concurrency: list[int], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'corral[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    high, low = str(max(concurrency)), str(min(concurrency))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    left.bar(names, [results[n]["non_stream"][high]["rps"] for n in names], color="#4878d0")
    left.set_title(f"requests/s at concurrency {high} (non-streaming)")
    left.set_yscale("log")
    right.bar(names, [results[n]["non_stream"][low]["p99_ms"] for n in names], color="#ee854a", alpha=0.35, label="p99")
    right.bar(names, [results[n]["non_stream"][low]["p50_ms"] for n in names], color="#ee854a", label="p50")
    right.set_title(f"latency at concurrency {low} (ms, log)")
    right.set_yscale("log")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=30)
    fig.savefig(path, dpi=100)
    plt.close(fig)
