"""`--plot`: a PNG of one run, drawn from its report: latency and TTFT histograms, throughput over time
and TTFT over time. matplotlib is optional (`pip install 'corral[plot]'`) and imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PlotUnavailable(RuntimeError):
    pass


def require_matplotlib() -> None:
    """Raise PlotUnavailable (with the command that fixes it) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'corral[plot]' (or 'matplotlib')"
        ) from None


def _histogram(ax: Any, bins: list[list[float]], title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylabel("requests")
    if not bins:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        return
    lows = [b[0] * 1000 for b in bins]
    widths = [max((b[1] - b[0]) * 1000, 1e-9) for b in bins]
    ax.bar(lows, [b[2] for b in bins], width=widths, align="edge", color="#4878d0", edgecolor="white", linewidth=0.3)


def write_png(report: dict[str, Any], path: Path) -> None:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((lat, ttft), (thr, over)) = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    s = report["settings"]
    fig.suptitle(f"corral loadtest · {s['endpoint']} · {s['mode']} · {'stream' if s['stream'] else 'no stream'}")
    _histogram(lat, report["histograms"]["latency_s"], "latency (from the scheduled send time)")
    _histogram(ttft, report["histograms"]["ttft_s"], "time to first token")

    rows = report["timeline"]
    seconds = [r["t"] for r in rows]
    thr.set_title("throughput (by the second requests ended)")
    thr.plot(seconds, [r["completed"] for r in rows], label="ok req/s", color="#4878d0")
    thr.plot(seconds, [r["errors"] for r in rows], label="errors/s", color="#d65f5f")
    thr.set_xlabel("s")
    thr.set_ylabel("requests/s")
    tokens = thr.twinx()
    tokens.plot(seconds, [r["output_tokens"] for r in rows], label="output tokens/s", color="#6acc64", alpha=0.7)
    tokens.set_ylabel("tokens/s")
    tokens.set_ylim(bottom=0)
    handles = thr.get_legend_handles_labels()[0] + tokens.get_legend_handles_labels()[0]
    thr.legend(handles=handles, loc="upper left", fontsize="small")

    over.set_title("TTFT over time (by the second requests were due)")
    for key, label in (("ttft_p50_s", "p50"), ("ttft_p99_s", "p99")):
        points = [(r["t"], r[key] * 1000) for r in rows if r[key] is not None]
        if points:
            over.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
    over.set_xlabel("s")
    over.set_ylabel("ms")
    if over.get_legend_handles_labels()[0]:
        over.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    plt.close(fig)
