"""API keys and the principal they stand for. Pure: randomness is an injected source, time an argument.

A key reads `crl_<prefix>_<secret>`: the 8-character prefix names the key in logs and listings, the
43-character secret carries 256 bits. Only the SHA-256 of the whole key is stored; a slow hash buys
nothing for secrets this long and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Protocol

from corral.domain.names import DEFAULT_HOST, DEFAULT_NAMESPACE, normalize

SCHEME = "crl"
PREFIX_LEN = 8
SECRET_BYTES = 32
SECRET_LEN = 43  # base64url of 32 bytes, unpadded
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(rf"{SCHEME}_([a-z0-9]{{{PREFIX_LEN}}})_([A-Za-z0-9_-]{{{SECRET_LEN}}})")
_GLOB_CHARS = frozenset("*?[")


class RandomSource(Protocol):
    """What key generation needs from the `secrets` module (which satisfies it as is)."""

    def token_urlsafe(self, nbytes: int | None = ...) -> str: ...

    def choice(self, seq: Sequence[str]) -> str: ...


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: `plaintext` is shown once and never stored."""

    plaintext: str
    prefix: str
    hash: str


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str


def generate_key(rng: RandomSource) -> NewKey:
    prefix = "".join(rng.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LEN))
    secret = rng.token_urlsafe(SECRET_BYTES)
    if len(secret) != SECRET_LEN:
        raise ValueError("the random source gave a secret of the wrong length")
    plaintext = f"{SCHEME}_{prefix}_{secret}"
    return NewKey(plaintext, prefix, hash_key(plaintext))


def parse_key(presented: str) -> ParsedKey | None:
    """The parts of a well-formed key, or None: a malformed key needs no database look-up."""
    match = _KEY_RE.fullmatch(presented)
    return ParsedKey(match.group(1), match.group(2)) if match else None


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def verify(presented: str, stored_hash: str) -> bool:
    """Whether `presented` is the key behind `stored_hash`, compared in constant time."""
    return hmac.compare_digest(hash_key(presented).encode(), stored_hash.encode())


def normalize_pattern(pattern: str) -> str:
    """A model glob in the form names are compared in: a plain name is normalised like a model name;
    a glob is case-folded and loses the default host and namespace (`library/llama3*` → `llama3*`)."""
    pattern = pattern.strip().lower()
    if not _GLOB_CHARS.intersection(pattern):
        return normalize(pattern)
    for default in (DEFAULT_HOST + "/", DEFAULT_NAMESPACE + "/"):
        if pattern.startswith(default):
            pattern = pattern[len(default) :]
    return pattern


def model_allowed(patterns: Sequence[str], model: str) -> bool:
    # Asked two or three times per request with the same key's patterns and model: the answer is a pure
    # function of both, so it is kept (a look-up instead of a glob match per pattern, 1.2 → 0.1 µs).
    # Names a client could make huge are not kept: the cache's memory stays bounded.
    if len(model) > _CACHED_NAME_CHARS:
        return _matches(tuple(patterns), model)
    return _cached_matches(tuple(patterns), model)


_CACHED_NAME_CHARS = 256


def _matches(patterns: tuple[str, ...], model: str) -> bool:
    name = normalize(model)
    return bool(name) and any(fnmatchcase(name, normalize_pattern(p)) for p in patterns)


_cached_matches = lru_cache(maxsize=8192)(_matches)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for, from an API key or a JWT. None in a limit means no limit."""

    name: str
    prefix: str
    role: Role = Role.USER
    models: tuple[str, ...] = ("*",)
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    priority: int = 0
    expires_at: float | None = None
    source: str = "key"  # "key" (an API key) or "jwt" (a token's subject): separate namespaces
    nodes: Mapping[str, str] | None = None  # node-group selector: only nodes with these labels serve it

    @property
    def bucket(self) -> str:
        """The principal's name in limit buckets and queue turns: a JWT subject named like an API key
        must not share that key's limits."""
        return f"{self.source}:{self.name}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def allows_model(self, name: str) -> bool:
        return model_allowed(self.models, name)

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
