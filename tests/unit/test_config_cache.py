"""The cache section: its defaults, and the combinations refused at load, each naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from corral.config import ConfigError, load_settings


def test_off_by_default_and_scoped_per_key() -> None:
    cache = load_settings().cache
    assert not cache.enabled and cache.backend == "memory" and cache.scope == "key" and cache.charge_hits
    assert cache.responses.deterministic == ["temperature_zero", "seed"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"backend": "redis"}, "cache.redis_url"),
        ({"redis_url": "redis://127.0.0.1:6379/0"}, "cache.redis_url"),
        ({"backend": "redis", "redis_url": "http://x"}, "cache.redis_url"),
        ({"backend": "redis", "redis_url": "redis://x:1/0", "max_bytes": 4096}, "cache.max_bytes"),
        ({"max_bytes": 4096, "max_entry_bytes": 8192}, "cache.max_entry_bytes"),
        ({"responses": {"enabled": True, "deterministic": []}}, "cache.responses.deterministic"),
        ({"responses": {"enabled": True, "routes": []}}, "cache.responses.routes"),
        ({"responses": {"routes": ["/api/embed"]}}, "cache.responses.routes"),
        ({"responses": {"deterministic": ["greedy"]}}, "cache.responses.deterministic[0]"),
        ({"scope": "team"}, "cache.scope"),
        ({"ttl_s": 0}, "cache.ttl_s"),
        ({"size": 1}, "cache.size"),
    ],
)
def test_bad_combinations_name_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(cache=section)
    assert key in [k for k, _ in caught.value.problems], caught.value.problems


def test_redis_backend_shared_by_replicas() -> None:
    cache = load_settings(cache={"backend": "redis", "redis_url": "redis://127.0.0.1:6379/2"}).cache
    assert cache.backend == "redis" and cache.redis_url == "redis://127.0.0.1:6379/2"
