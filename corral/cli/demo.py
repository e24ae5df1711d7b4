"""`corral demo`: three simulated nodes behind Corral, ready to chat with."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from corral.app.build import App
from corral.config import ConfigError, load_settings

console = Console()

DEMO_NODES = (
    ("node-a", ["llama3.2:1b", "qwen2.5:7b", "nomic-embed-text"]),
    ("node-b", ["llama3.2:1b", "llama3.1:8b"]),
    ("node-c", ["qwen2.5:7b", "llama3.1:8b", "nomic-embed-text"]),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_sims(stack: ExitStack) -> list[dict[str, object]]:
    backends: list[dict[str, object]] = []
    for name, models in DEMO_NODES:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "corral",
            "sim",
            "--port",
            str(port),
            "--tokens-per-second",
            "30",
            "--load-seconds",
            "1.0",
            "--parallel",
            "2",
        ]
        for model in models:
            args += ["--model", model]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(_stop, proc)
        backends.append({"name": name, "url": f"http://127.0.0.1:{port}", "type": "ollama", "parallel": 2})
    for backend in backends:
        if not wait_ready(f"{backend['url']}/", 20):
            raise SystemExit(f"simulated node {backend['name']} did not start")
    return backends


def banner(app: App) -> None:
    url = f"http://127.0.0.1:{app.port}"
    console.print(
        Panel(
            f"Corral is running at [bold]{url}[/] in front of {len(app.fleet)} simulated Ollama nodes.\n"
            f"Fleet: corral status --url {url}   Live: corral top --url {url}   Stop: Ctrl-C",
            title="corral demo",
            expand=False,
        )
    )
    # The examples are printed plainly (no box, no wrapping) so that they can be pasted as they are.
    chat = '{"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hello!"}]}'
    print(f"\ncurl:\n  curl {url}/api/chat -d '{chat}'\n")
    print("Python (pip install ollama):")
    print(
        f'  import ollama; print(ollama.Client(host="{url}").chat(model="llama3.2:1b", '
        'messages=[{"role": "user", "content": "Hello!"}]).message.content)\n'
    )
    print("Python (pip install openai):")
    print(
        f'  from openai import OpenAI; print(OpenAI(base_url="{url}/v1", api_key="unused").chat.completions'
        '.create(model="llama3.2:1b", messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)',
        flush=True,
    )


def run(port: int, config: Path | None) -> None:
    from corral.app.logs import configure
    from corral.cli.runner import run_gateway

    with ExitStack() as stack:
        audit = Path(tempfile.mkdtemp(prefix="corral-demo-")) / "audit.log"
        overrides: dict[str, object] = {
            "server": {"port": port},
            "logging": {"access": False},
            "audit": {"path": str(audit)},
        }
        if config is None:
            overrides["backends"] = start_sims(stack)
        try:
            settings = load_settings(config, **overrides)
        except ConfigError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise SystemExit(2) from None
        configure("warning", "console" if sys.stderr.isatty() else os.environ.get("CORRAL_LOG_FORMAT", "json"))
        run_gateway(settings, banner)
