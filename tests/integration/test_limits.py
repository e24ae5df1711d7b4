"""Rate, token and concurrency limits against real processes (and a real Redis for several replicas)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from procs import Proc, new_key, start_corral, start_sim, wait_for
from tests.contract.servers import ServerUnavailable, start_redis


def make_key(tmp: Path, *args: str) -> str:
    config = tmp / "keys.yaml"
    config.write_text(yaml.safe_dump({"auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}"}}))
    return new_key(config, *args)


def config(tmp: Path, sim: Proc, **limits: Any) -> dict[str, Any]:
    return {
        "backends": [{"name": "n", "url": sim.url}],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}"},
        "limits": limits,
    }


@pytest.fixture
def sim() -> Iterator[Proc]:
    proc = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0", "--parallel", "16"])
    yield proc
    proc.stop()


def generate(corral: Proc, key: str, tokens: int = 2) -> httpx.Response:
    return httpx.post(
        corral.url + "/api/generate",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": "m:1b", "prompt": "x", "stream": False, "options": {"num_predict": tokens}},
    )


def test_requests_per_minute_are_exact_under_concurrency(tmp_path: Path, sim: Proc) -> None:
    key = make_key(tmp_path, "--name", "k", "--rpm", "5")
    corral = start_corral(config(tmp_path, sim))
    try:
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: generate(corral, key), range(12)))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200] * 5 + [429] * 7
        refused = next(r for r in replies if r.status_code == 429)
        assert "rate limit" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "5" and refused.headers["ratelimit-remaining"] == "0"
        ok = next(r for r in replies if r.status_code == 200)
        assert ok.headers["ratelimit-limit"] == "5"
        client = openai.OpenAI(base_url=corral.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.models.list()
    finally:
        corral.stop()


def test_tokens_per_minute_charge_what_was_used(tmp_path: Path, sim: Proc) -> None:
    key = make_key(tmp_path, "--name", "t", "--tpm", "40")
    corral = start_corral(config(tmp_path, sim, estimate_tokens=5))
    try:
        statuses = [generate(corral, key, tokens=12).status_code for _ in range(6)]
        # Each answer uses 13 tokens (1 prompt + 12): three fit in 40, the fourth is refused.
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        refused = generate(corral, key, tokens=1)
        assert refused.status_code == 429 and "token rate limit" in refused.json()["error"]
    finally:
        corral.stop()


def test_concurrent_requests_per_key(tmp_path: Path) -> None:
    slow = start_sim("m:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0", "--parallel", "4"])
    key = make_key(tmp_path, "--name", "c", "--max-concurrency", "1")
    corral = start_corral(config(tmp_path, slow))
    try:
        with httpx.stream(
            "POST",
            corral.url + "/api/generate",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "m:1b", "prompt": "x", "options": {"num_predict": 200}},
            timeout=30,
        ) as first:
            lines = first.iter_lines()
            next(lines)
            second = generate(corral, key)  # the first stream runs for 10 s: its slot is taken
            assert second.status_code == 429 and "concurrent" in second.json()["error"]
        # Leaving the stream early gives the slot back too.
        wait_for(lambda: generate(corral, key).status_code == 200, 5, "the slot to be given back")
    finally:
        corral.stop()
        slow.stop()


def test_two_replicas_sharing_redis_admit_exactly_the_limit_together(tmp_path: Path, sim: Proc) -> None:
    try:
        redis_cm = start_redis()
        redis = redis_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    key = make_key(tmp_path, "--name", "shared", "--rpm", "6")
    replicas = [start_corral(config(tmp_path, sim, redis_url=redis.url, store_timeout_s=5)) for _ in range(2)]
    try:
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda i: generate(replicas[i % 2], key), range(20)))
        assert sum(r.status_code == 200 for r in replies) == 6
        assert sum(r.status_code == 429 for r in replies) == 14
    finally:
        for corral in replicas:
            corral.stop()
        redis_cm.__exit__(None, None, None)


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_redis_down_follows_the_configured_policy(tmp_path: Path, sim: Proc, policy: str) -> None:
    try:
        redis_cm = start_redis()
        redis = redis_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    key = make_key(tmp_path, "--name", "r", "--rpm", "100")
    corral = start_corral(config(tmp_path, sim, redis_url=redis.url, on_store_error=policy))
    try:
        assert generate(corral, key).status_code == 200
        redis.kill()
        expected = 200 if policy == "allow" else 429
        assert generate(corral, key).status_code == expected
        metrics = httpx.get(corral.url + "/metrics", timeout=10).text
        assert "corral_limit_store_errors_total 1.0" in metrics or "corral_limit_store_errors_total 2.0" in metrics
    finally:
        corral.stop()
        redis_cm.__exit__(None, None, None)


def test_burst_share_caps_a_slice_of_the_minute(tmp_path: Path, sim: Proc) -> None:
    key = make_key(tmp_path, "--name", "b", "--rpm", "8")
    corral = start_corral(config(tmp_path, sim, burst_share=0.25))  # at most 2 in any 15 s
    try:
        codes = [generate(corral, key).status_code for _ in range(5)]
        assert codes == [200, 200, 429, 429, 429]
    finally:
        corral.stop()
