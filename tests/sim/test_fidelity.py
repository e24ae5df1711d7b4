"""Where the simulator follows Ollama's exact behaviour on requests a gateway may see (issue 9 item 12),
each against a real sim process and as the Ollama source states it (comments name the file)."""

from __future__ import annotations

import base64

import httpx
import ollama
import openai
import pytest

from tests.sim.conftest import Sim, wait_until


def post(sim: Sim, path: str, body: object) -> httpx.Response:
    return httpx.post(sim.url + path, json=body, timeout=30)


def test_embed_keeps_empty_strings_in_a_batch(sim: Sim) -> None:
    # server/routes.go EmbedHandler appends every string of a list; only "" alone (or no input) loads.
    reply = post(sim, "/api/embed", {"model": "nomic-embed-text", "input": ["a", "", "b", ""]}).json()
    assert len(reply["embeddings"]) == 4
    assert reply["embeddings"][1] == reply["embeddings"][3] != reply["embeddings"][0]
    single = post(sim, "/api/embed", {"model": "nomic-embed-text", "input": [""]}).json()
    assert single["embeddings"] == [reply["embeddings"][1]]
    assert ollama.Client(host=sim.url).embed(model="nomic-embed-text", input=["x", ""]).embeddings[1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": "nomic-embed-text", "prompt": "", "keep_alive": 0}),
        ("/api/chat", {"model": "my-encoder", "messages": [], "keep_alive": "0s"}),
    ],
)
def test_keep_alive_zero_unloads_an_embedding_model(clean: Sim, path: str, body: dict[str, object]) -> None:
    # routes.go GenerateHandler/ChatHandler expire the runner before scheduleRunner's capability check:
    # this is what `ollama stop` sends, whatever the model can do.
    model = str(body["model"])
    post(clean, "/api/embed", {"model": model, "input": "warm"}).raise_for_status()
    assert any(name.startswith(model) for name in clean.ps())
    reply = post(clean, path, body)
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["done"] is True and answer["done_reason"] == "unload" and answer["model"] == model
    wait_until(lambda: not any(name.startswith(model) for name in clean.ps()), 5, "the unload")
    # Without keep_alive 0 the same empty request is a load, which the capability check refuses.
    refused = post(clean, path, {k: v for k, v in body.items() if k != "keep_alive"})
    kind = "generate" if path == "/api/generate" else "chat"
    assert (refused.status_code, refused.json()) == (400, {"error": f'"{model}" does not support {kind}'})


def test_ollama_client_unloads_an_embedding_model(clean: Sim) -> None:
    client = ollama.Client(host=clean.url)
    client.embed(model="nomic-embed-text", input="warm")
    assert client.generate(model="nomic-embed-text", prompt="", keep_alive=0).done_reason == "unload"


@pytest.mark.parametrize(("path", "struct"), [("/api/generate", "GenerateRequest"), ("/api/chat", "ChatRequest")])
def test_stream_must_be_a_bool(sim: Sim, path: str, struct: str) -> None:
    # api/types.go: `Stream *bool`; encoding/json refuses a string for it.
    body = {"model": "llama3.2:1b", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}
    reply = post(sim, path, body)
    error = f"json: cannot unmarshal string into Go struct field {struct}.stream of type bool"
    assert (reply.status_code, reply.json()) == (400, {"error": error})


def test_openai_stream_must_be_a_bool(sim: Sim) -> None:
    # openai/openai.go ChatCompletionRequest.Stream is a bool; the middleware answers in the OpenAI shape.
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}
    reply = post(sim, "/v1/chat/completions", body)
    assert reply.status_code == 400
    assert reply.json()["error"] == {
        "message": "json: cannot unmarshal string into Go struct field ChatCompletionRequest.stream of type bool",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_stop_in_options_must_be_an_array(sim: Sim) -> None:
    # api/types.go Options.FromMap: a []string field takes only a JSON array; its error is a 500
    # (handleScheduleError's default in routes.go).
    body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"stop": "x"}}
    reply = post(sim, "/api/generate", body)
    assert (reply.status_code, reply.json()) == (500, {"error": 'option "stop" must be of type array'})
    body["options"] = {"stop": ["x", 1]}
    reply = post(sim, "/api/generate", body)
    assert (reply.status_code, reply.json()) == (500, {"error": 'option "stop" must be of an array of strings'})
    # /v1 takes a string: FromChatRequest turns it into a one-element array.
    chat = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stop": "the"}
    assert post(sim, "/v1/chat/completions", chat).status_code == 200


def test_invalid_base64_images_are_refused(sim: Sim) -> None:
    # api.ImageData is []byte: encoding/json decodes it as padded standard base64 and returns the
    # base64 package's error at decode time (a 400, before the model is even looked up).
    good = base64.b64encode(b"\x89PNG").decode()
    ok = post(sim, "/api/generate", {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "images": [good]})
    assert ok.status_code == 200
    bad = post(sim, "/api/generate", {"model": "nope", "prompt": "hi", "images": ["not base64!"]})
    assert (bad.status_code, bad.json()) == (400, {"error": "illegal base64 data at input byte 3"})
    message = {"role": "user", "content": "hi", "images": [good, "QQ="]}
    chat = post(sim, "/api/chat", {"model": "llama3.2:1b", "messages": [message]})
    assert (chat.status_code, chat.json()) == (400, {"error": "illegal base64 data at input byte 3"})
    url = {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}
    v1 = post(sim, "/v1/chat/completions", {"model": "llama3.2:1b", "messages": [{"role": "user", "content": [url]}]})
    assert (v1.status_code, v1.json()["error"]["message"]) == (400, "invalid image input")  # decodeImageURL


def test_keys_fold_case_and_the_last_match_wins(sim: Sim) -> None:
    # encoding/json matches keys to fields case-insensitively (Unicode simple folding: ſ is s,
    # K is k), last one wins; `options` is a map, so its keys stay exact (unknown ones ignored).
    body = (
        '{"model":"nope","MODEL":"llama3.2:1b","PROMPT":"hi","\u017ftream":false,'
        '"Options":{"num_predict":3,"NUM_PREDICT":50},"\u212aeep_alive":"1m"}'
    )
    reply = httpx.post(sim.url + "/api/generate", content=body.encode(), timeout=30).json()
    assert reply["model"] == "llama3.2:1b" and reply["eval_count"] == 3 and reply["done_reason"] == "length"
    chat = '{"Model":"llama3.2:1b","Messages":[{"ROLE":"USER","Content":"hi"}],"Stream":false,"Tools":[]}'
    answer = httpx.post(sim.url + "/api/chat", content=chat.encode(), timeout=30).json()
    assert answer["message"]["role"] == "assistant" and answer["message"]["content"]


def test_openai_keys_fold_case(sim: Sim) -> None:
    body = '{"Model":"llama3.2:1b","MESSAGES":[{"Role":"user","Content":"hi"}],"Max_Tokens":2}'
    reply = httpx.post(sim.url + "/v1/chat/completions", content=body.encode(), timeout=30).json()
    assert reply["usage"]["completion_tokens"] == 2 and reply["choices"][0]["finish_reason"] == "length"
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="unused")
    assert client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])


def test_check_order_follows_the_handlers(sim: Sim) -> None:
    # routes.go: top_logprobs before the model lookup; think before the capability check; the
    # options (FromMap, a 500) after it.
    top = post(sim, "/api/generate", {"model": "nope", "prompt": "hi", "top_logprobs": 21})
    assert (top.status_code, top.json()) == (400, {"error": "top_logprobs must be between 0 and 20"})
    think = post(sim, "/api/chat", {"model": "nomic-embed-text", "messages": [{"role": "user"}], "think": True})
    assert (think.status_code, think.json()) == (400, {"error": '"nomic-embed-text" does not support thinking'})
    caps = post(
        sim, "/api/chat", {"model": "nomic-embed-text", "messages": [{"role": "user"}], "options": {"seed": "x"}}
    )
    assert (caps.status_code, caps.json()) == (400, {"error": '"nomic-embed-text" does not support chat'})
    keep = post(sim, "/api/generate", {"model": "llama3.2:1b", "keep_alive": "5 m"})
    assert (keep.status_code, keep.json()) == (400, {"error": 'time: unknown unit " m" in duration "5 m"'})
