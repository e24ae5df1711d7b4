"""A real OpenAI-type inference server behind Corral: llama.cpp's server (llama-cpp-python) with a
small real model (Gemma 3 270M). Native Ollama clients use it through Corral's translation.
scripts/install-llama.sh (run by scripts/test.sh) installs both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from procs import Proc, free_port, start_corral, wait_for

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".cache" / "llama-venv" / "bin" / "python"
MODEL = ROOT / ".cache" / "models" / "gemma3-270m.gguf"

pytestmark = pytest.mark.skipif(
    not (PYTHON.exists() and MODEL.exists()), reason="run scripts/install-llama.sh (scripts/test.sh does)"
)


@pytest.fixture(scope="module")
def llama() -> Iterator[tuple[Proc, Proc]]:
    port = free_port()
    args = [
        str(PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(MODEL),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "512",
        "--n_threads",
        "1",
        "--model_alias",
        "gemma3:270m",
        # llama-cpp-python otherwise cancels a running generation whenever another request arrives,
        # Corral's health checks and model polls included (docs/api.md, OpenAI-type nodes).
        "--interrupt_requests",
        "False",
    ]
    server = Proc(args, port)
    try:

        def ready() -> bool:
            if server.proc.poll() is not None:
                raise RuntimeError(server.output()[-2000:])
            return httpx.get(server.url + "/v1/models", timeout=2).status_code == 200

        wait_for(ready, 60, "llama.cpp's server")
        corral = start_corral({"backends": [{"name": "llama", "url": server.url, "type": "openai"}]})
        yield server, corral
        corral.stop()
    finally:
        server.stop()


def test_ollama_client_chats_with_a_real_openai_server(llama: tuple[Proc, Proc]) -> None:
    _, corral = llama
    client = ollama.Client(host=corral.url, timeout=120)
    assert "gemma3:270m" in [m.model for m in client.list().models]
    reply = client.generate(model="gemma3:270m", prompt="The capital of France is", options={"num_predict": 8})
    assert reply.done and reply.done_reason in ("stop", "length") and reply.response
    assert reply.eval_count and reply.eval_count <= 8 and reply.prompt_eval_count and reply.total_duration
    parts = list(
        client.generate(model="gemma3:270m", prompt="One, two, three,", stream=True, options={"num_predict": 6})
    )
    assert len(parts) >= 2 and parts[-1].done and parts[-1].eval_count
    chat = list(
        client.chat(
            model="gemma3:270m",
            messages=[{"role": "user", "content": "Say hi"}],
            stream=True,
            options={"num_predict": 6},
        )
    )
    assert chat[-1].done and all(p.message.role == "assistant" for p in chat)


def test_raw_ndjson_and_openai_passthrough(llama: tuple[Proc, Proc]) -> None:
    _server, corral = llama
    with httpx.stream(
        "POST",
        corral.url + "/api/chat",
        timeout=120,
        json={"model": "gemma3:270m", "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 4}},
    ) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in reply.iter_lines()]
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] in ("stop", "length") and "total_duration" in final
    client = openai.OpenAI(base_url=corral.url + "/v1", api_key="x", max_retries=0, timeout=120)
    completion = client.completions.create(model="gemma3:270m", prompt="Hello", max_tokens=4)
    assert completion.choices[0].text is not None
