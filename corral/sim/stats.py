"""What the simulated node has seen, for tests (GET /_sim/stats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_MAX_PATHS = 256


@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=dict)  # by path
    # "In flight" = holding one of a runner's parallel slots (generating). Waiting for a load or a slot
    # is counted apart, so max_in_flight_by_model shows whether `parallel` was respected.
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    max_in_flight_by_model: dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    cancelled: int = 0  # client went away while its inference request was queued or generating
    dropped: int = 0  # connections cut by the drop_after fault
    midstream_errors: int = 0
    injected_errors: int = 0  # error_rate fault
    rejected_busy: int = 0  # 503 queue full
    tokens: int = 0
    # The runners' prompt caches: requests that took more than a tenth of their prompt from a slot (hits)
    # or not (misses), and the prompt tokens taken from a slot or evaluated. A miss may still reuse a few
    # tokens, e.g. the chat template's header.
    prompt_cache: dict[str, int] = field(
        default_factory=lambda: {"hits": 0, "misses": 0, "cached_tokens": 0, "evaluated_tokens": 0}
    )
    last_headers: dict[str, str] = field(default_factory=dict)  # of the last POST outside /_sim
    headers_by_path: dict[str, dict[str, str]] = field(default_factory=dict)

    def begin(self, model: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        now = self.in_flight_by_model.get(model, 0) + 1
        self.in_flight_by_model[model] = now
        self.max_in_flight_by_model[model] = max(self.max_in_flight_by_model.get(model, 0), now)

    def end(self, model: str) -> None:
        self.in_flight -= 1
        self.in_flight_by_model[model] -= 1

    def prompt(self, hit: bool, cached: int, evaluated: int) -> None:
        self.prompt_cache["hits" if hit else "misses"] += 1
        self.prompt_cache["cached_tokens"] += cached
        self.prompt_cache["evaluated_tokens"] += evaluated

    def seen(self, path: str, method: str, headers: list[tuple[bytes, bytes]]) -> None:
        if path not in self.requests and len(self.requests) >= _MAX_PATHS:
            path = "(other)"  # a fuzzer's random paths must not grow the node's memory
        self.requests[path] = self.requests.get(path, 0) + 1
        if path.startswith("/_sim/"):
            return
        decoded = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
        self.headers_by_path[path] = decoded
        if method == "POST":
            self.last_headers = decoded

    def reset(self) -> None:
        """Clear the counters; live gauges (what is in flight or waiting now) stay true."""
        live = (self.in_flight, dict(self.in_flight_by_model), self.waiting)
        fresh = Stats()
        self.__dict__.update(fresh.__dict__)
        self.in_flight, self.in_flight_by_model, self.waiting = live
        self.max_in_flight = self.in_flight
        self.max_in_flight_by_model = {k: v for k, v in self.in_flight_by_model.items() if v}

    def snapshot(self) -> dict[str, Any]:
        return dict(self.__dict__)
