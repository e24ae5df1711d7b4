"""`corral sim`: one simulated Ollama node, a real HTTP server faithful to the Ollama API.

It imports nothing from the rest of Corral: tests compare two independent implementations of the
API reference instead of one implementation with itself.
"""

from __future__ import annotations

from corral.sim.options import SimOptions


def build_app(options: SimOptions) -> object:
    from corral.sim.app import SimApp

    return SimApp(options)


def serve(options: SimOptions) -> None:
    """Serve until interrupted (uvicorn on uvloop with httptools)."""
    import uvicorn

    from corral.sim.app import SimApp

    uvicorn.run(
        SimApp(options),
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=75,
    )


__all__ = ["SimOptions", "build_app", "serve"]
