"""The console's API and where it is served, over plain HTTP (no browser needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.app.routes import inference_paths
from corral.config import ConfigError, load_settings
from procs import Proc, free_port, start_corral, start_sim, wait_for
from tests.console.conftest import ConsoleFleet, new_key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_console_figures_are_the_metrics_figures(console_fleet: ConsoleFleet) -> None:
    """Requests, errors and generated tokens over the window add up to the /metrics counters' values."""
    url, admin = console_fleet.url, console_fleet.admin
    for model in ("llama3.2:1b", "llama3.2:1b", "no-such-model:1b"):
        body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 5}}
        httpx.post(url + "/api/generate", json=body, headers=bearer(admin), timeout=30)

    def totals() -> tuple[float, float, float]:
        doc = httpx.get(url + "/ui/api/traffic?window=900&step=1", headers=bearer(admin), timeout=5).json()
        return sum(doc["requests_s"]), sum(doc["errors_s"]), sum(doc["tokens_s"])

    def scraped() -> tuple[float, float, float]:
        inference = set(inference_paths())
        found = {"corral_requests_total": 0.0, "corral_errors_total": 0.0, "corral_tokens_total": 0.0}
        for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
            m = re.match(r"(\w+)\{(.*)\} (\S+)$", line)
            if m is None or m.group(1) not in found:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if labels.get("route", "/api/generate") in inference and labels.get("kind") != "prompt":
                found[m.group(1)] += float(m.group(3))
        return found["corral_requests_total"], found["corral_errors_total"], found["corral_tokens_total"]

    # The ring shows complete seconds only: wait for the last request's second to close, then compare.
    wait_for(lambda: totals() == scraped(), 10, "console totals equal to the /metrics counters")
    requests, errors, tokens = totals()
    assert requests >= 3 and errors >= 1 and tokens >= 10


def test_traffic_parameters_are_checked_and_named(console_fleet: ConsoleFleet) -> None:
    url, admin = console_fleet.url, console_fleet.admin
    for query, field in (("window=5", "window"), ("step=0", "step"), ("step=x", "step"), ("scope=everything", "scope")):
        reply = httpx.get(url + "/ui/api/traffic?" + query, headers=bearer(admin), timeout=5)
        assert reply.status_code == 400, query
        assert reply.json()["error"].startswith(field + ":"), reply.text
    assert httpx.get(url + "/ui/api/traffic", timeout=5).status_code == 401  # keys on: the figures need one


def test_console_responses_carry_a_strict_policy_and_files_revalidate(console_fleet: ConsoleFleet) -> None:
    url = console_fleet.url
    page = httpx.get(url + "/ui", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "<script>" not in page.text and " on" not in page.text.split("<body>")[1].split(">")[0]
    script = httpx.get(url + "/ui/app.js", timeout=5)
    again = httpx.get(url + "/ui/app.js", headers={"If-None-Match": script.headers["etag"]}, timeout=5)
    assert again.status_code == 304 and again.content == b""
    missing = httpx.get(url + "/ui/nothing.js", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"error": "no console file 'nothing.js'"}
    keys = httpx.get(url + "/ui/api/keys", headers=bearer(console_fleet.admin), timeout=5)
    assert keys.headers["cache-control"] == "no-store" and "content-security-policy" in keys.headers


@pytest.fixture(scope="module")
def on_metrics_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, str]]:
    tmp = tmp_path_factory.mktemp("console-listener")
    sim = start_sim("llama3.2:1b", extra=["--load-seconds", "0"], timeout=40)
    side = f"127.0.0.1:{free_port()}"
    config = {
        "backends": [{"name": "n1", "url": sim.url}],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}"},
        "metrics": {"listen": side},
        "console": {"listen": "metrics"},
    }
    corral = start_corral(config, timeout=40)
    try:
        admin = new_key(corral.config_path, "admin", "--role", "admin")  # type: ignore[attr-defined]
        yield corral, f"http://{side}", admin
    finally:
        corral.stop()
        sim.stop()


def test_console_on_the_metrics_listener(on_metrics_listener: tuple[Proc, str, str]) -> None:
    corral, side, admin = on_metrics_listener
    assert httpx.get(corral.url + "/ui", timeout=5).status_code == 404  # not on the main listener
    assert httpx.get(corral.url + "/ui/api/overview", headers=bearer(admin), timeout=5).status_code == 404
    assert httpx.get(side + "/ui", timeout=5).status_code == 200
    assert httpx.get(side + "/metrics", timeout=5).status_code == 200  # still no key for Prometheus
    assert httpx.get(side + "/ui/api/overview", timeout=5).status_code == 401  # the console's data needs one
    overview = httpx.get(side + "/ui/api/overview", headers=bearer(admin), timeout=5)
    assert overview.status_code == 200 and overview.json()["auth"]["admin"] is True
    # The admin API the page calls is there too, behind the same guards, and acts on the same fleet.
    drained = httpx.post(side + "/admin/backends/n1/drain", headers=bearer(admin), timeout=5)
    assert drained.status_code == 200
    status = httpx.get(corral.url + "/internal/status", headers=bearer(admin), timeout=5).json()
    assert status["nodes"][0]["state"] == "draining"
    assert httpx.post(side + "/admin/backends/n1/undrain", headers=bearer(admin), timeout=5).status_code == 200
    assert httpx.post(side + "/admin/backends/n1/undrain", timeout=5).status_code == 401
    assert httpx.get(side + "/api/tags", headers=bearer(admin), timeout=5).status_code == 404  # no inference there


def test_console_off_and_a_listener_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("console: {listen: metrics}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [key for key, _ in caught.value.problems] == ["console.listen"]
    path.write_text("console: {enabled: false}\nmetrics: {listen: '127.0.0.1:9100'}\n")
    assert load_settings(path).console.enabled is False

    corral = start_corral({"console": {"enabled": False}}, timeout=40)
    try:
        assert httpx.get(corral.url + "/ui", timeout=5).status_code == 404
        assert httpx.get(corral.url + "/ui/api/session", timeout=5).status_code == 404
    finally:
        corral.stop()
