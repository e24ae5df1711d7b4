"""Properties of the simulator's pure helpers: Go-compatible JSON and durations, model names."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.sim.catalog import normalize
from corral.sim.params import FOREVER, go_duration, parse_keep_alive
from corral.sim.wire import BadRequest, go_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_go_json_round_trips_and_never_emits_raw_separators_or_html(value: object) -> None:
    data = go_json(value)
    assert json.loads(data) == value
    text = data.decode()
    assert not any(c in text for c in "<>&\u2028\u2029")
    assert "\n" not in text  # one line: safe as an NDJSON frame


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("-1m", -60), ("2h3m4s", 7384)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"), [("300", "missing unit"), ("5 m", 'unknown unit " m" in duration'), ("", "invalid")]
)
def test_bad_go_durations(value: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        go_duration(value)
    assert message in err.value.message and err.value.status == 400


def test_negative_keep_alive_is_forever_and_default_applies() -> None:
    assert parse_keep_alive(-1, "5m") == FOREVER
    assert parse_keep_alive("-5s", "5m") == FOREVER
    assert parse_keep_alive(None, "5m") == 300
    assert parse_keep_alive(None, "600") == 600  # OLLAMA_KEEP_ALIVE takes bare seconds


@given(st.from_regex(r"[a-z][a-z0-9.\-]{0,10}(:[a-z0-9.]{1,6})?", fullmatch=True))
def test_name_spellings_normalise_alike(name: str) -> None:
    base = normalize(name)
    assert normalize(base) == base
    assert normalize(name.upper()) == base
    assert normalize("registry.ollama.ai/library/" + name) == base
    if ":" not in name:
        assert normalize(name + ":latest") == base
