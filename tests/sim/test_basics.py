"""Basics every client relies on: root, version, body handling, routing errors, names (§11 items 1-6, 21-23, 28, 40)."""

from __future__ import annotations

import re

import httpx
import ollama
import pytest

from tests.sim.conftest import Sim, start_sim


def test_root_answers_text_and_head_has_no_body(sim: Sim) -> None:
    reply = httpx.get(sim.url + "/")
    assert reply.status_code == 200
    assert reply.text == "Ollama is running"
    assert reply.headers["content-type"].startswith("text/plain")
    head = httpx.head(sim.url + "/")
    assert head.status_code == 200 and head.content == b""


def test_version_parses_as_dotted_integers(sim: Sim) -> None:
    reply = httpx.get(sim.url + "/api/version")
    version = reply.json()["version"]
    assert [int(p) for p in version.lstrip("v").split("-")[0].split(".")]
    assert httpx.head(sim.url + "/api/version").status_code == 200
    assert ollama.Client(host=sim.url).ps() is not None


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_json_body_is_read_whatever_the_content_type(sim: Sim, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"model":"llama3.2:1b","prompt":"hi","stream":false,"options":{"num_predict":2}}'
    reply = httpx.post(sim.url + "/api/generate", content=body, headers=headers)
    assert reply.status_code == 200
    assert reply.json()["done"] is True


def test_unknown_fields_and_option_keys_are_accepted(sim: Sim) -> None:
    body = {
        "model": "llama3.2:1b",
        "prompt": "hi",
        "stream": False,
        "whatever": {"nested": 1},
        "options": {"num_predict": 2, "mirostat": 1, "numa_foo": "x"},
    }
    assert httpx.post(sim.url + "/api/generate", json=body).status_code == 200


def test_empty_and_malformed_bodies_are_400(sim: Sim) -> None:
    empty = httpx.post(sim.url + "/api/chat", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    bad = httpx.post(sim.url + "/api/chat", content=b'{"model": ')
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    assert bad.headers["content-type"].startswith("application/json")
    wrong = httpx.post(sim.url + "/api/chat", content=b"[1]")
    assert wrong.status_code == 400 and "cannot unmarshal array" in wrong.json()["error"]


def test_unknown_path_is_404_text_and_wrong_method_is_405(sim: Sim) -> None:
    missing = httpx.get(sim.url + "/api/nope")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    method = httpx.get(sim.url + "/api/chat")
    assert (method.status_code, method.text) == (405, "405 method not allowed")
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=sim.url + "/no/such/prefix").list()
    assert (err.value.status_code, err.value.error) == (404, "404 page not found")


def test_trailing_slash_redirects_like_gin(sim: Sim) -> None:
    reply = httpx.get(sim.url + "/api/tags/")
    assert reply.status_code == 301 and reply.headers["location"] == "/api/tags"
    assert httpx.post(sim.url + "/api/chat/", json={}).status_code == 307


def test_unknown_model_is_404_with_the_exact_message(sim: Sim) -> None:
    for path, body in (
        ("/api/generate", {"model": "nope", "prompt": "x"}),
        ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/show", {"model": "nope"}),
    ):
        reply = httpx.post(sim.url + path, json=body)
        assert (reply.status_code, reply.json()) == (404, {"error": "model 'nope' not found"}), path
    client = ollama.Client(host=sim.url)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    reply = httpx.post(sim.url + "/api/generate", json={"model": "", "prompt": "x"})
    assert (reply.status_code, reply.json()) == (404, {"error": "model '' not found"})


def test_chat_without_model_is_400(sim: Sim) -> None:
    reply = httpx.post(sim.url + "/api/chat", json={"model": "", "messages": []})
    assert (reply.status_code, reply.json()) == (400, {"error": "model is required"})


def test_capability_errors(sim: Sim) -> None:
    user = [{"role": "user", "content": "x"}]
    think = httpx.post(sim.url + "/api/chat", json={"model": "llama3.2:1b", "messages": user, "think": True})
    assert (think.status_code, think.json()) == (400, {"error": '"llama3.2:1b" does not support thinking'})
    bogus = httpx.post(sim.url + "/api/chat", json={"model": "qwen3:4b", "messages": user, "think": "bogus"})
    assert bogus.status_code == 400 and bogus.json()["error"].startswith("invalid think value")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    no_tools = httpx.post(sim.url + "/api/chat", json={"model": "gemma3:1b", "messages": user, "tools": tools})
    assert (no_tools.status_code, no_tools.json()) == (
        400,
        {"error": "registry.ollama.ai/library/gemma3:1b does not support tools"},
    )
    embed_gen = httpx.post(sim.url + "/api/generate", json={"model": "nomic-embed-text", "prompt": "x"})
    assert (embed_gen.status_code, embed_gen.json()) == (400, {"error": '"nomic-embed-text" does not support generate'})
    embed_chat = httpx.post(sim.url + "/api/chat", json={"model": "my-encoder", "messages": user})
    assert (embed_chat.status_code, embed_chat.json()) == (400, {"error": '"my-encoder" does not support chat'})


def test_top_logprobs_out_of_range_is_400(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "x", "logprobs": True, "top_logprobs": 21}
    reply = httpx.post(sim.url + "/api/generate", json=body)
    assert (reply.status_code, reply.json()) == (400, {"error": "top_logprobs must be between 0 and 20"})


def test_raw_with_template_is_400(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "x", "raw": True, "template": "{{ .Prompt }}"}
    reply = httpx.post(sim.url + "/api/generate", json=body)
    assert reply.json() == {"error": "raw mode does not support template, system, or context"}


def test_wrong_option_type_is_500(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "x", "options": {"num_ctx": "big"}}
    reply = httpx.post(sim.url + "/api/generate", json=body)
    assert (reply.status_code, reply.json()) == (500, {"error": 'option "num_ctx" must be of type integer'})


@pytest.mark.parametrize("spelling", ["llama3.2:1b", "LLAMA3.2:1B", "registry.ollama.ai/library/llama3.2:1b"])
def test_name_spellings_are_one_model_and_are_echoed(sim: Sim, spelling: str) -> None:
    body = {"model": spelling, "prompt": "same", "stream": False, "options": {"num_predict": 5}}
    reply = httpx.post(sim.url + "/api/generate", json=body).json()
    assert reply["model"] == spelling
    canonical = httpx.post(sim.url + "/api/generate", json={**body, "model": "llama3.2:1b"}).json()
    assert reply["response"] == canonical["response"]
    default_tag = httpx.post(sim.url + "/api/show", json={"model": "nomic-embed-text:latest"})
    assert default_tag.status_code == 200


def test_go_json_escapes_html_and_line_separators(sim: Sim) -> None:
    # The simulated text has no such characters, but the echoed model name does.
    name = "llama3.2:1b"
    reply = httpx.post(sim.url + "/api/show", json={"model": name + "<&>"})
    assert b"\\u003c\\u0026\\u003e" in reply.content and b"<" not in reply.content
    separator = httpx.post(sim.url + "/api/show", json={"model": "x\u2028y"})
    assert b"\\u2028" in separator.content and "\u2028".encode() not in separator.content


def test_created_at_is_rfc3339_utc(sim: Sim) -> None:
    body = {"model": "llama3.2:1b", "prompt": "x", "stream": False, "options": {"num_predict": 1}}
    stamp = httpx.post(sim.url + "/api/generate", json=body).json()["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", stamp)


def test_host_check_rejects_foreign_hosts_like_ollama_on_loopback() -> None:
    with start_sim("--model", "m:1b", "--host-check") as node:
        assert httpx.get(node.url + "/api/tags").status_code == 200
        for host in ("localhost:11434", "ollama.internal", "10.0.0.7:80", "[::1]:1"):
            assert httpx.get(node.url + "/api/tags", headers={"host": host}).status_code == 200, host
        foreign = httpx.get(node.url + "/api/tags", headers={"host": "gw.example"})
        assert (foreign.status_code, foreign.content) == (403, b"")
