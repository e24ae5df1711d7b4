"""`corral demo`: three simulated nodes behind Corral, usable with the official client, gone on Ctrl-C."""

from __future__ import annotations

import signal
import sys

import httpx
import ollama

from procs import Proc, free_port, wait_for


def test_demo_serves_a_chat_and_cleans_up() -> None:
    port = free_port()
    demo = Proc([sys.executable, "-m", "corral", "demo", "--port", str(port)], port)
    try:
        wait_for(lambda: httpx.get(demo.url + "/ready", timeout=1).status_code == 200, 30, "the demo")
        client = ollama.Client(host=demo.url, timeout=60)
        reply = client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.message.content and reply.done
        status = httpx.get(demo.url + "/internal/status").json()
        assert len(status["nodes"]) == 3 and all(n["state"] == "up" for n in status["nodes"])
        wait_for(lambda: "curl" in demo.output() and "ollama.Client" in demo.output(), 5, "the banner")
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(20) == 0
        urls = [n["url"] for n in status["nodes"]]
        for url in urls:
            wait_for(lambda u=url: _refused(u), 10, f"simulated node {url} to stop")
    finally:
        demo.stop()


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        return True
    return False
