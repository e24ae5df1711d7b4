"""`corral sim`: one simulated Ollama node, a real HTTP server faithful to the Ollama API.

It imports nothing from the rest of Corral: tests compare two independent implementations of the
API reference instead of one implementation with itself.
"""

from __future__ import annotations

import logging

from corral.sim.app import SimApp
from corral.sim.options import SimOptions
from corral.sim.stream import Drop


class _HideDrops(logging.Filter):
    """The drop_after fault cuts connections by raising Drop; that is the fault working, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Drop))


def build_app(options: SimOptions) -> SimApp:
    return SimApp(options)


def serve(options: SimOptions) -> None:
    """Serve until interrupted (uvicorn on uvloop with httptools)."""
    import uvicorn

    config = uvicorn.Config(
        build_app(options),
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,  # hung requests (the hang fault) must not keep the node alive
    )
    server = uvicorn.Server(config)  # configures logging, so the filter goes on afterwards
    logging.getLogger("uvicorn.error").addFilter(_HideDrops())
    server.run()


__all__ = ["SimApp", "SimOptions", "build_app", "serve"]
