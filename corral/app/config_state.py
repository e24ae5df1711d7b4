"""The running configuration's identity, its reloads' results, and the switch between pipeline generations.

Each request takes the pipeline generation current when it arrives (`Pipeline.__call__` reads `current`
once) and keeps it to its end: a reload builds a new generation (routing, limits, validation, auth and
cache settings) and swaps it in between two requests, never under one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from corral.app.context import RequestRecord
from corral.app.views import send_json
from corral.config import Settings, load_settings
from corral.domain.config_diff import NodeChanges
from corral.net.response import Request, Response

if TYPE_CHECKING:
    from corral.app.gateway import Gateway


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ConfigVersion:
    hash: str  # of the effective settings (file and CORRAL_* variables): equal settings, equal hash
    loaded_at: float  # unix seconds

    @classmethod
    def of(cls, settings: Settings) -> ConfigVersion:
        digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]
        return cls(digest, time.time())

    def as_json(self) -> dict[str, object]:
        return {"hash": self.hash, "loaded_at": _iso(self.loaded_at)}


@dataclass(frozen=True)
class ReloadResult:
    result: Literal["ok", "error"]
    trigger: str  # signal, watch, admin, or the caller's word
    version: ConfigVersion  # the configuration running after this reload
    previous: str  # the hash before it
    nodes: NodeChanges = field(default_factory=NodeChanges)
    changed: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()  # (key, reason) when refused
    at: float = field(default_factory=time.time)

    @property
    def error(self) -> str | None:
        if not self.problems:
            return None
        return "invalid configuration, not applied: " + "; ".join(f"{k}: {r}" for k, r in self.problems)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "result": self.result,
            "trigger": self.trigger,
            "at": _iso(self.at),
            "version": self.version.as_json(),
            "previous_version": self.previous,
            "backends": {
                "added": list(self.nodes.added),
                "removed": list(self.nodes.removed),
                "replaced": list(self.nodes.replaced),
                "updated": list(self.nodes.updated),
            },
            "changed": list(self.changed),
            "restart_required": list(self.restart_required),
        }
        if self.problems:
            out["error"] = self.error
            out["problems"] = [{"key": k, "reason": r} for k, r in self.problems]
        return out


@dataclass(frozen=True)
class ConfigSource:
    """Where the settings come from: the file (if any) and the command line's overrides."""

    path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        return load_settings(self.path, **self.overrides)


class Pipeline:
    """The server's handler: the current pipeline generation (a Gateway)."""

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway
        self.generation = 1

    def __call__(self, request: Request, response: Response) -> Awaitable[None]:
        return self.current(request, response)  # bound now: the request keeps this generation

    def swap(self, gateway: Gateway) -> None:
        self.current = gateway
        self.generation += 1


class ConfigState:
    """The version running, the last reload's result, and how to reload (set by whoever serves)."""

    def __init__(self, settings: Settings, on_result: Callable[[str], None] | None = None) -> None:
        self.version = ConfigVersion.of(settings)
        self.last: ReloadResult | None = None
        self.on_result = on_result or (lambda result: None)
        self.reloader: Callable[[str], Awaitable[ReloadResult]] | None = None
        self.lock = asyncio.Lock()  # one reload at a time

    def record(self, result: ReloadResult) -> None:
        self.last = result
        self.version = result.version
        self.on_result(result.result)

    def status(self) -> dict[str, object]:
        return {**self.version.as_json(), "last_reload": self.last.as_json() if self.last else None}

    async def admin_reload(self, request: Request, response: Response, record: RequestRecord) -> None:
        """POST /admin/reload: re-read the configuration and apply it; answers the result (422 if refused)."""
        if self.reloader is None:
            send_json(response, record, {"error": "hot reload is not available in this process"}, 409)
            return
        result = await self.reloader("admin")
        send_json(response, record, result.as_json(), 200 if result.result == "ok" else 422)
