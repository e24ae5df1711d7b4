import base64
import random
import secrets
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.keys import (
    PREFIX_LEN,
    SECRET_LEN,
    Principal,
    Role,
    generate_key,
    hash_key,
    model_allowed,
    parse_key,
    verify,
)


class SeededSource:
    """A reproducible stand-in for `secrets`, so that properties can range over many keys."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        raw = self.rng.randbytes(nbytes or 32)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def choice(self, seq: Sequence[str]) -> str:
        return self.rng.choice(seq)


seeds = st.integers(min_value=0, max_value=2**64)


def test_secrets_module_is_a_random_source() -> None:
    key = generate_key(secrets)
    assert key.plaintext.startswith("crl_" + key.prefix + "_")
    assert len(key.plaintext) == 4 + PREFIX_LEN + 1 + SECRET_LEN
    assert key.hash == hash_key(key.plaintext) and key.plaintext not in key.hash


@given(seeds)
def test_generated_keys_parse_back_and_verify(seed: int) -> None:
    key = generate_key(SeededSource(seed))
    parsed = parse_key(key.plaintext)
    assert parsed is not None and parsed.prefix == key.prefix and len(parsed.secret) == SECRET_LEN
    assert verify(key.plaintext, key.hash)
    assert len(key.hash) == 64


@given(seeds, st.integers(min_value=0), st.characters(codec="ascii"))
def test_any_changed_character_fails_verification(seed: int, where: int, char: str) -> None:
    key = generate_key(SeededSource(seed))
    i = where % len(key.plaintext)
    changed = key.plaintext[:i] + char + key.plaintext[i + 1 :]
    assert verify(changed, key.hash) == (changed == key.plaintext)


@given(seeds, seeds)
def test_different_sources_give_different_keys(a: int, b: int) -> None:
    ka, kb = generate_key(SeededSource(a)), generate_key(SeededSource(b))
    assert (ka.plaintext == kb.plaintext) == (a == b)


@given(st.text(max_size=80))
def test_parse_accepts_only_the_key_shape(text: str) -> None:
    parsed = parse_key(text)
    if parsed is not None:
        assert text == f"crl_{parsed.prefix}_{parsed.secret}"


def test_malformed_keys_do_not_parse() -> None:
    good = generate_key(secrets).plaintext
    for bad in ["", good[:-1], good + "x", "sk_" + good[4:], good.replace("crl_", "CRL_"), " " + good]:
        assert parse_key(bad) is None


def test_model_globs_match_normalised_names() -> None:
    p = Principal("team", "abcdefgh", models=("llama3*", "qwen2.5:7b"))
    assert p.allows_model("llama3.2:1b")
    assert p.allows_model("LLAMA3")  # llama3:latest
    assert p.allows_model("registry.ollama.ai/library/llama3.1:8b")
    assert p.allows_model("qwen2.5:7b") and not p.allows_model("qwen2.5:14b")
    assert not p.allows_model("mistral") and not p.allows_model("")
    assert Principal("x", "abcdefgh", models=("library/llama3*",)).allows_model("llama3.2")
    assert Principal("x", "abcdefgh", models=("qwen2.5",)).allows_model("qwen2.5:latest")
    assert not Principal("x", "abcdefgh", models=()).allows_model("llama3")


def test_the_answer_is_the_same_asked_again_and_for_names_too_long_to_keep() -> None:
    p = Principal("team", "abcdefgh", models=("llama3*",))
    long_name = "llama3-" + "x" * 400  # past the length whose answers are kept
    for _ in range(2):
        assert p.allows_model("llama3.2:1b") and not p.allows_model("mistral")
        assert p.allows_model(long_name) and not p.allows_model("mistral-" + "x" * 400)
    assert not Principal("x", "abcdefgh", models=("qwen*",)).allows_model("llama3.2:1b")  # another key's list


name_part = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)


@given(name_part, st.one_of(st.none(), name_part))
def test_star_allows_every_model_and_a_name_allows_its_spellings(model: str, tag: str | None) -> None:
    name = model if tag is None else f"{model}:{tag}"
    assert model_allowed(["*"], name)
    assert model_allowed([name], name.upper())
    assert model_allowed([name], "registry.ollama.ai/library/" + name)


def test_roles_and_expiry() -> None:
    admin = Principal("ops", "abcdefgh", role=Role.ADMIN, expires_at=100.0)
    assert admin.is_admin and not Principal("u", "abcdefgh").is_admin
    assert not admin.is_expired(99.9) and admin.is_expired(100.0)
    assert not Principal("u", "abcdefgh").is_expired(1e12)
