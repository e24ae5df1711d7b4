"""Active health state with HAProxy-like rise/fall: flip only after N consecutive results."""

from __future__ import annotations


class HealthTracker:
    def __init__(self, rise: int = 2, fall: int = 2, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self._streak = 0  # consecutive results that disagree with the current state

    def observe(self, ok: bool) -> bool:
        """Record one check. Returns True when the up/down state changed."""
        if ok == self.up:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.up = ok
            self._streak = 0
            return True
        return False

    def force(self, up: bool) -> None:
        """Set the state directly (the first check of a node decides it at once)."""
        self.up = up
        self._streak = 0
