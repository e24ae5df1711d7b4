"""llama.cpp's OpenAI-compatible server (llama-cpp-python) with a small real model (Gemma 3 270M), as a
real child process for tests. scripts/install-llama.sh puts both under .cache/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from procs import Proc, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
LLAMA_PYTHON = ROOT / ".cache" / "llama-venv" / "bin" / "python"
LLAMA_MODEL = ROOT / ".cache" / "models" / "gemma3-270m.gguf"
MODEL_ALIAS = "gemma3:270m"


def llamacpp_missing() -> str | None:
    """Why the server cannot start here (for pytest.skip), or None."""
    if not LLAMA_PYTHON.exists():
        return f"no llama.cpp venv at {LLAMA_PYTHON}: run scripts/install-llama.sh (scripts/test.sh does)"
    if not LLAMA_MODEL.exists():
        return f"no model at {LLAMA_MODEL}: run scripts/install-llama.sh (scripts/test.sh does)"
    return None


@contextmanager
def start_llamacpp(port: int | None = None, alias: str = MODEL_ALIAS, timeout_s: float = 60.0) -> Iterator[str]:
    """Starts the server on a loopback port, waits until /v1/models answers, yields its base URL
    (http://127.0.0.1:PORT, without /v1) and stops it afterwards."""
    port = port or free_port()
    args = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(LLAMA_MODEL)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "1"]
    args += ["--model_alias", alias, "--interrupt_requests", "False"]  # see test_llamacpp.py
    server = Proc(args, port)
    try:

        def ready() -> bool:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp's server exited with {server.proc.returncode}:\n{server.output()[-3000:]}"
                )
            return httpx.get(server.url + "/v1/models", timeout=2).status_code == 200

        try:
            wait_for(ready, timeout_s, f"llama.cpp's server on {server.url}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{server.output()[-3000:]}") from exc
        yield server.url
    finally:
        server.stop()
