"""The live display while a run goes: requests done, errors, in flight, the current rate, and latency
and TTFT p50/p99 so far. On a terminal it is a rich panel redrawn twice a second from the run's own
event loop (no display thread competing with the load); elsewhere (a pipe, CI) a plain line every
few seconds.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from corral.loadtest.stats import LogHistogram

if TYPE_CHECKING:
    from corral.loadtest.driver import Driver

TERMINAL_REFRESH_S = 0.5
PLAIN_REFRESH_S = 5.0


def ms(hist: LogHistogram, q: float) -> str:
    return f"{hist.percentile(q) * 1000:,.1f}" if hist.count else "-"


class Progress:
    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live: Live | None = None
        self.driver: Driver | None = None
        self.label = ""
        self.timer: asyncio.TimerHandle | None = None
        self.started = 0.0
        self.last = (0.0, 0)  # (time, completed) at the previous refresh

    def watch(self, driver: Driver, label: str) -> None:
        if not self.enabled:
            return
        self.driver, self.label = driver, label
        self.started = perf_counter()
        self.last = (self.started, 0)
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=True)
            self.live.start()
        self.timer = driver.loop.call_later(self._interval(), self._tick)

    def _interval(self) -> float:
        return TERMINAL_REFRESH_S if self.live is not None else PLAIN_REFRESH_S

    def _tick(self) -> None:
        if self.driver is None:
            return
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
        else:
            self.console.print(self._line(), highlight=False)
        self.timer = self.driver.loop.call_later(self._interval(), self._tick)

    def _figures(self) -> dict[str, str]:
        assert self.driver is not None
        d, rec = self.driver, self.driver.recorder
        now = perf_counter()
        then, before = self.last
        rate = (rec.count - before) / (now - then) if now > then else 0.0
        self.last = (now, rec.count)
        waiting = len(getattr(d, "pending", ()))
        figures = {
            "time": f"{now - self.started:,.1f}s",
            "done": f"{rec.count:,}",
            "errors": f"{rec.error_count:,}",
            "in flight": f"{d.in_flight + waiting:,}",
            "req/s": f"{rate:,.0f}",
            "p50 ms": ms(rec.live_latency, 50),
            "p99 ms": ms(rec.live_latency, 99),
        }
        if d.stream:
            figures |= {"TTFT p50": ms(rec.live_ttft, 50), "TTFT p99": ms(rec.live_ttft, 99)}
        return figures

    def _table(self) -> Table:
        figures = self._figures() if self.driver is not None else {}
        table = Table(title=f"corral loadtest {self.label}".strip(), title_justify="left")
        for name in figures:
            table.add_column(name, justify="right", no_wrap=True)
        table.add_row(*figures.values())
        return table

    def _line(self) -> str:
        return f"{self.label} " * bool(self.label) + "  ".join(f"{k} {v}" for k, v in self._figures().items())

    def note(self, text: str) -> None:
        """A line that stays (a finished ramp step)."""
        if self.enabled:
            self.console.print(text, highlight=False)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.driver = None
