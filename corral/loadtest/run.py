"""Running a load test: one closed- or open-loop run, or the steps of a ramp, on one uvloop event loop,
with the live display refreshed from the same loop. Returns the report (report.py) of what was done;
Ctrl-C ends the run early and still reports what finished.
"""

from __future__ import annotations

import asyncio
import math
import resource
import signal
import socket
from dataclasses import dataclass
from typing import Any

import uvloop

from corral.loadtest.driver import ClosedLoop, Driver, OpenLoop
from corral.loadtest.live import Progress
from corral.loadtest.ramp import RampSearch
from corral.loadtest.record import Recorder
from corral.loadtest.report import merge, ramp_p99_ttft, summarize
from corral.loadtest.requests import Target


@dataclass(frozen=True)
class Plan:
    target: Target
    url: str
    models: tuple[str, ...]
    requests: tuple[bytes, ...]
    stream: bool
    concurrency: int | None = None  # closed loop
    rate: float | None = None  # open loop
    ramp: tuple[float, float] | None = None  # open-loop steps between these rates
    ttft_bound_s: float = 2.0
    duration_s: float | None = None  # per ramp step in ramp mode
    count: int | None = None  # requests (per ramp step in ramp mode)
    timeout_s: float = 300.0
    seed: int | None = None

    def settings(self) -> dict[str, Any]:
        mode = "ramp" if self.ramp else "open" if self.rate else "closed"
        out: dict[str, Any] = {
            "url": self.url,
            "api": self.target.api,
            "endpoint": self.target.endpoint,
            "models": list(self.models),
            "stream": self.stream,
            "mode": mode,
            "concurrency": self.concurrency,
            "rate_per_s": self.rate,
            "duration_s": self.duration_s,
            "requests": self.count,
            "timeout_s": self.timeout_s,
        }
        if self.ramp:
            out |= {"ramp_per_s": list(self.ramp), "ttft_bound_s": self.ttft_bound_s}
        return out


def max_connections() -> int:
    """As many connections as the open-files limit allows, with room to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(soft - 64, 20_000)) if soft != resource.RLIM_INFINITY else 20_000


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))
        except (ValueError, OSError):
            pass


def check_reachable(target: Target, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError naming the address when nothing accepts connections there."""
    try:
        socket.create_connection((target.host, target.port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}") from None


class Session:
    """One invocation: its plan, the display, and whether Ctrl-C asked it to end."""

    def __init__(self, plan: Plan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.interrupted = False
        self.driver: Driver | None = None

    def was_interrupted(self) -> bool:
        return self.interrupted  # a call: Ctrl-C sets it while the run is awaited

    def _interrupt(self) -> None:
        self.interrupted = True
        if self.driver is not None:
            self.driver.abort()

    async def _one(self, rate: float | None, label: str) -> Recorder:
        p = self.plan
        requests = list(p.requests)
        driver: Driver
        if rate is None:
            assert p.concurrency is not None
            driver = ClosedLoop(p.target, requests, p.stream, p.timeout_s, p.concurrency, p.duration_s, p.count)
        else:
            driver = OpenLoop(
                p.target, requests, p.stream, p.timeout_s, rate, p.duration_s, p.count, max_connections(), p.seed
            )
        self.driver = driver
        driver.start()
        self.progress.watch(driver, label)
        try:
            await driver.done
        finally:
            self.progress.stop()
            self.driver = None
        return driver.recorder

    async def main(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        try:
            if self.plan.ramp is None:
                rec = await self._one(self.plan.rate, "")
                report = summarize(rec, self.plan.settings())
            else:
                report = await self._ramp()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        report["interrupted"] = self.interrupted
        return report

    async def _ramp(self) -> dict[str, Any]:
        assert self.plan.ramp is not None
        low, high = self.plan.ramp
        search = RampSearch(low, high, self.plan.ttft_bound_s)
        recorders: list[Recorder] = []
        steps: list[dict[str, Any]] = []
        while (rate := search.next_rate()) is not None and not self.interrupted:
            rec = await self._one(rate, f"step {len(steps) + 1}: {rate:,.1f}/s")
            if self.was_interrupted():
                break
            p99 = ramp_p99_ttft(rec)
            step = search.observe(rate, p99)
            recorders.append(rec)
            summary = summarize(rec, self.plan.settings() | {"mode": "open", "rate_per_s": rate})
            summary.pop("timeline")
            steps.append(
                {
                    "rate_per_s": rate,
                    "p99_ttft_s": p99 if math.isfinite(p99) else None,
                    "within_bound": step.within,
                    "report": summary,
                }
            )
            self.progress.note(
                f"{rate:,.1f}/s: p99 TTFT {'∞' if not math.isfinite(p99) else f'{p99 * 1000:,.0f} ms'} "
                f"({'within' if step.within else 'over'} the bound)"
            )
        report = (
            summarize(merge(recorders), self.plan.settings())
            if recorders
            else summarize(Recorder(0.0), self.plan.settings())
        )
        report["ramp"] = {
            "ttft_bound_s": self.plan.ttft_bound_s,
            "max_rate_within_bound_per_s": search.best,
            "first_rate_over_bound_per_s": search.first_over,
            "steps": steps,
        }
        return report


def execute(plan: Plan, progress: Progress) -> dict[str, Any]:
    """Run the plan to its end (or Ctrl-C) and return its report."""
    raise_open_files_limit()
    session = Session(plan, progress)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(session.main())
