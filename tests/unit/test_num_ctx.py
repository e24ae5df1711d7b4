"""The per-model num_ctx policy: its forms, and what it does to a request's options."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.config import ConfigError, load_settings
from corral.domain.num_ctx import NumCtxPolicy, effective, parse, rewrite

asked = st.one_of(st.none(), st.integers(1, 1 << 20))
policies = st.one_of(
    st.just(NumCtxPolicy("normalize")),
    st.integers(1, 1 << 20).map(lambda n: NumCtxPolicy("normalize", n)),
    st.integers(1, 1 << 20).map(lambda n: NumCtxPolicy("cap", n)),
)


def test_forms() -> None:
    assert parse("normalize") == NumCtxPolicy("normalize")
    assert parse(" normalize  8192 ") == NumCtxPolicy("normalize", 8192)
    assert parse("cap 4096") == NumCtxPolicy("cap", 4096)
    for bad in ("", "cap", "cap 0", "cap -1", "cap 4k", "normalise", "normalize 1 2", "max 4096"):
        with pytest.raises(ValueError, match="normalize"):
            parse(bad)


def test_a_bad_policy_is_refused_at_load_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, models={"llama3.2": {"num_ctx": "cap lots"}})
    assert caught.value.problems[0][0] == "models.llama3.2.num_ctx"
    settings = load_settings(None, models={"llama3.2": {"num_ctx": "cap  8192"}})
    assert settings.models.per_model["llama3.2"].num_ctx_policy == NumCtxPolicy("cap", 8192)


def test_what_each_policy_sends() -> None:
    other = {"temperature": 0.2}
    assert rewrite(parse("normalize"), {**other, "num_ctx": 8192}) == other
    assert rewrite(parse("normalize"), other) is None  # nothing to change: the bytes go as they came
    assert rewrite(parse("normalize"), None) is None
    assert rewrite(parse("normalize 8192"), other) == {**other, "num_ctx": 8192}
    assert rewrite(parse("normalize 8192"), {"num_ctx": 8192.0}) is None  # the same to Ollama
    assert rewrite(parse("cap 4096"), {"num_ctx": 8192, "seed": 1}) == {"num_ctx": 4096, "seed": 1}
    assert rewrite(parse("cap 4096"), {"num_ctx": 2048}) is None
    assert rewrite(parse("cap 4096"), {}) is None
    # A wrong type is the node's to refuse, in its own words.
    for wrong in ("8192", True, 8192.5, None):
        assert rewrite(parse("normalize"), {"num_ctx": wrong}) is None


@given(policies, st.lists(asked, min_size=1, max_size=20))
def test_normalize_leaves_one_context_per_model(policy: NumCtxPolicy, values: list[int | None]) -> None:
    contexts = {effective(policy, v) for v in values}
    if policy.mode == "normalize":
        assert len(contexts) == 1
    else:
        assert policy.value is not None
        assert all(c is None or c <= policy.value for c in contexts)
        assert all(effective(policy, v) == v for v in values if v is None or v <= policy.value)


@given(policies, asked, st.dictionaries(st.sampled_from(["seed", "top_k", "stop"]), st.integers()))
def test_a_rewrite_touches_only_num_ctx_and_is_stable(policy: NumCtxPolicy, value: int | None, rest: Any) -> None:
    options = {**rest, **({} if value is None else {"num_ctx": value})}
    out = rewrite(policy, options)
    sent = options if out is None else out
    assert {k: v for k, v in sent.items() if k != "num_ctx"} == rest
    assert rewrite(policy, sent) is None  # applying it again changes nothing
