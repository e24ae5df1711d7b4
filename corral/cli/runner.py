"""Runs the gateway on uvloop in the foreground."""

from __future__ import annotations

from collections.abc import Callable

import uvloop

from corral.app.build import App
from corral.app.config_state import ConfigSource
from corral.app.serve import run
from corral.config import Settings


def run_gateway(
    settings: Settings,
    on_ready: Callable[[App], None] | None = None,
    source: ConfigSource | None = None,
    watch: bool = False,
) -> None:
    uvloop.run(run(settings, on_ready, source, watch))
