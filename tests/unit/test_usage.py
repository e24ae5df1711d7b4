"""Usage counting (issue 9 item 3, issue 16 item 2): the node's counts when it gave them, else what was
relayed, so a tokens-per-minute limit is charged for every stream."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.protocol.prompts import estimated_prompt_tokens
from corral.protocol.usage import TAIL, Counts, Framing, UsageMeter

TOKENS = ["Hel", "lo", ",", " wor", "ld", "!", "\n", ' "data: x"']


def native_stream(n: int, final: bool = True) -> bytes:
    lines = [
        json.dumps({"model": "m", "message": {"role": "assistant", "content": TOKENS[i % len(TOKENS)]}, "done": False})
        for i in range(n)
    ]
    if final:
        lines.append(
            '{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
            f'"total_duration":9,"load_duration":1500000000,"prompt_eval_count":12,"eval_count":{n}}}'
        )
    return "".join(line + "\n" for line in lines).encode()


def sse_stream(n: int, usage: bool = False, done: bool = True, kind: str = "chat") -> bytes:
    def chunk(body: dict[str, object]) -> str:
        return "data: " + json.dumps({"id": "chatcmpl-1", "model": "m", **body}, separators=(",", ":")) + "\n\n"

    if kind == "chat":
        events = [chunk({"choices": [{"index": 0, "delta": {"content": TOKENS[i % len(TOKENS)]}}]}) for i in range(n)]
        events.append(chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    else:  # /v1/completions, where Ollama puts an empty usage in every chunk under include_usage
        zero = {"usage": {"prompt_tokens": 0, "completion_tokens": 0}} if usage else {}
        events = [chunk({"choices": [{"text": TOKENS[i % len(TOKENS)]}], **zero}) for i in range(n)]
    if usage:
        events.append(chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}}))
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def meter(framing: Framing, body: bytes, cuts: list[int] | None = None) -> Counts:
    m = UsageMeter(framing)
    start = 0
    for cut in sorted(set(cuts or [])):
        m.feed(body[start:cut])
        start = cut
    m.feed(body[start:])
    return m.counts()


def test_the_nodes_native_counts_win() -> None:
    assert meter(Framing.NDJSON, native_stream(30)) == Counts(12, 30, 1.5, False)


def test_a_native_stream_cut_short_counts_one_token_per_line() -> None:
    counts = meter(Framing.NDJSON, native_stream(40, final=False))
    assert counts == Counts(None, 40, None, True)
    assert meter(Framing.NDJSON, native_stream(40, final=False)[:-5]).completion_tokens == 40  # a partial line


def test_an_sse_stream_without_usage_counts_its_deltas() -> None:
    # The openai client's default: no stream_options.include_usage, so Ollama sends no usage.
    assert meter(Framing.SSE, sse_stream(25)) == Counts(None, 25, None, True)


def test_sse_usage_wins_when_the_node_sent_it() -> None:
    assert meter(Framing.SSE, sse_stream(25, usage=True)) == Counts(7, 25, None, False)
    assert meter(Framing.SSE, sse_stream(25, usage=True, kind="completions")) == Counts(7, 25, None, False)


def test_the_empty_usage_of_an_unfinished_stream_is_not_the_nodes_count() -> None:
    # Ollama's /v1/completions chunks carry {"prompt_tokens":0,...} until the final one.
    cut = meter(Framing.SSE, sse_stream(25, usage=True, done=False, kind="completions").rsplit(b"data:", 1)[0])
    assert cut.counted and cut.completion_tokens == 25


def test_an_abandoned_sse_stream_counts_what_was_relayed() -> None:
    body = sse_stream(60)
    half = body[: body.index(b"data:", len(body) // 2)]
    events = half.count(b"\n\n")  # not half.count(b"data:"): one token's text is "data: x"
    assert half.count(b"data:") > events and meter(Framing.SSE, half).completion_tokens == events


def test_a_whole_answer_without_usage_is_estimated_from_its_text() -> None:
    answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * 400}}]}).encode()
    assert meter(Framing.JSON, answer) == Counts(None, 100, None, True)
    native = b'{"model":"m","response":"' + b"y" * 401 + b'","done":true,"prompt_eval_count":3,"eval_count":90}'
    assert meter(Framing.JSON, native) == Counts(3, 90, None, False)
    assert meter(Framing.JSON, b"not json at all").completion_tokens == 4
    assert meter(Framing.JSON, b"").completion_tokens == 0


def test_framing_follows_the_content_type() -> None:
    assert Framing.of(b"application/x-ndjson") is Framing.NDJSON
    assert Framing.of(b"text/event-stream; charset=utf-8") is Framing.SSE
    assert Framing.of(b"application/json; charset=utf-8") is Framing.JSON
    assert Framing.of(None) is Framing.JSON


def test_charge_is_never_below_the_admission_estimate() -> None:
    assert Counts(None, 10, None, True).charge(prompt_estimate=50) == 60
    assert Counts(5, 10, None, False).charge(prompt_estimate=50) == 15
    assert Counts(5, 10, None, False).charge(prompt_estimate=50, admitted=256) == 256


def test_estimated_prompt_tokens() -> None:
    doc = {
        "model": "m",
        "system": "s" * 40,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "t" * 80}]}],
    }
    assert estimated_prompt_tokens(doc) == 30
    assert estimated_prompt_tokens({"model": "m"}) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 80),
    st.sampled_from(["ndjson", "ndjson-cut", "sse", "sse-usage", "sse-cut"]),
    st.lists(st.integers(0, 20_000), max_size=40),
)
def test_counts_do_not_depend_on_how_the_stream_was_split(n: int, kind: str, cuts: list[int]) -> None:
    framing = Framing.NDJSON if kind.startswith("ndjson") else Framing.SSE
    body = {
        "ndjson": native_stream(n),
        "ndjson-cut": native_stream(n, final=False),
        "sse": sse_stream(n),
        "sse-usage": sse_stream(n, usage=True),
        "sse-cut": sse_stream(n, done=False)[: -len(b"data: {}\n\n") * 3],
    }[kind]
    cuts = [c for c in cuts if c <= len(body)]
    assert meter(framing, body, cuts) == meter(framing, body)
    if kind != "sse-cut":
        assert meter(framing, body).completion_tokens == n


def test_a_long_streams_kept_tail_stays_bounded() -> None:
    # The meter keeps the last bytes of a stream for its counts, trimmed in batches: a stream of any
    # length holds at most about two tails, and its counts are those of the full stream.
    body = native_stream(5000)
    m = UsageMeter(Framing.NDJSON)
    peak = 0
    for i in range(0, len(body), 97):
        m.feed(body[i : i + 97])
        peak = max(peak, m._kept)
    assert peak <= 2 * TAIL + 97
    assert m.counts() == Counts(12, 5000, 1.5, False)


def test_counts_outside_the_last_line_are_still_found() -> None:
    # The counts are looked for in a native stream's last line first; where that line lacks them, or
    # a count's value was put on the next line, the whole tail is read, as before.
    lines = native_stream(3).split(b"\n")
    final = lines[-2]
    moved = b"\n".join([*lines[:-2], final, b'{"model":"m","done":false}', b""])
    assert meter(Framing.NDJSON, moved) == Counts(12, 3, 1.5, False)
    split = final.replace(b'"eval_count":', b'"eval_count":\n')
    assert meter(Framing.NDJSON, b"\n".join([*lines[:-2], split, b""])) == Counts(12, 3, 1.5, False)
