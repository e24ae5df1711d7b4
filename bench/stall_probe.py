"""Runs `corral` with two probes that the product does not carry (issue 12, stalls): every garbage-collector
pass (generation, duration) through `gc.callbacks`, and the event loop's lag (a task that asks to wake
every 5 ms and records how late it woke). At exit it writes both to the JSON file named by
$CORRAL_STALL_PROBE; with $CORRAL_STALL_PROBE_PROFILE, a cProfile of the run to that file. With
$CORRAL_STALL_PROBE_GC=default, the gateway's own collector tuning at start-up (`gc.freeze`,
`gc.set_threshold`) is skipped, for an A/B run.

    CORRAL_STALL_PROBE=out.json python -m bench.stall_probe serve --config corral.yaml
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import time
from typing import Any

PERIOD_S = 0.005
pauses: list[tuple[float, int, float]] = []  # (wall clock, generation, seconds)
lags: list[tuple[float, float]] = []  # (wall clock, seconds late)
_began: dict[str, float] = {}


def _gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _began["t"] = time.perf_counter()
    elif "t" in _began:
        pauses.append((time.time(), int(info["generation"]), time.perf_counter() - _began.pop("t")))


async def _sample() -> None:
    while True:
        due = time.perf_counter() + PERIOD_S
        await asyncio.sleep(PERIOD_S)
        lags.append((time.time(), max(0.0, time.perf_counter() - due)))


def _write() -> None:
    path = os.environ.get("CORRAL_STALL_PROBE")
    if path:
        with open(path, "w") as out:
            json.dump({"gc": pauses, "lag_s": lags}, out)


def main() -> None:
    gc.callbacks.append(_gc)
    atexit.register(_write)
    if os.environ.get("CORRAL_STALL_PROBE_GC") == "default":
        gc.freeze = lambda: None  # type: ignore[assignment]
        gc.set_threshold = lambda *a: None  # type: ignore[assignment]
    import corral.cli.runner as runner

    serve = runner.run

    async def probed(*args: Any, **kw: Any) -> None:
        task = asyncio.get_running_loop().create_task(_sample())
        try:
            await serve(*args, **kw)
        finally:
            task.cancel()

    runner.run = probed  # type: ignore[assignment]
    if profile := os.environ.get("CORRAL_STALL_PROBE_PROFILE"):  # where the CPU goes, too (cProfile)
        import cProfile

        profiler = cProfile.Profile()
        atexit.register(lambda: profiler.dump_stats(profile))
        profiler.enable()
    from corral.cli.main import main as corral_main

    sys.argv[0] = "corral"
    corral_main()


if __name__ == "__main__":
    main()
