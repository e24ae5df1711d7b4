"""The web console in a real headless Chromium against a real Corral and `corral sim` nodes.

Each page's screenshot in docs/console/ is taken by these tests (docs/console.md shows them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from procs import start_corral, start_sim, wait_for
from tests.console.conftest import SCREENSHOTS, ConsoleFleet

pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
from playwright.sync_api import Page, expect

expect.set_options(timeout=15_000)


@dataclass
class Tab:
    """A page in its own browser context, with every request, console error and page error recorded."""

    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    asset_bytes: dict[str, int] = field(default_factory=dict)

    def goto(self, hash_path: str = "") -> None:
        self.page.goto(self.base + "/ui" + hash_path)

    def sign_in(self, key: str, name: str) -> None:
        self.goto()
        self.page.fill("#signin-key", key)
        self.page.click("#signin-form button[type=submit]")
        expect(self.page.locator("#who")).to_contain_text(name)

    def show(self, page: str) -> None:
        self.page.click(f"#nav a[data-page={page}]")
        expect(self.page.locator(f"#page-{page}")).to_be_visible()

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # as tall as the page

    def fetch(self, method: str, path: str, key: str | None) -> int:
        """A request made by the page itself (so with the browser's Origin on writes)."""
        script = """async ([method, path, key]) => {
            const headers = key ? {Authorization: "Bearer " + key} : {};
            return (await fetch(path, {method, headers})).status;
        }"""
        return int(self.page.evaluate(script, [method, path, key]))


@pytest.fixture
def tab(browser: Any, console_fleet: ConsoleFleet) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 600})
    page = context.new_page()
    tab = Tab(page, console_fleet.url)
    context.on("request", lambda request: tab.requests.append(request.url))
    page.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))

    def sized(response: Any) -> None:
        if "/ui" in response.url and "/ui/api/" not in response.url and response.ok:
            tab.asset_bytes[response.url] = len(response.body())

    page.on("response", sized)
    try:
        yield tab
    finally:
        context.close()


def generate(url: str, key: str, model: str = "llama3.2:1b", stream: bool = True) -> httpx.Response:
    body = {"model": model, "prompt": "hello", "stream": stream, "options": {"num_predict": 8}}
    return httpx.post(url + "/api/generate", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_console_loads_every_page_with_no_errors_and_no_outside_request(tab: Tab, console_fleet: ConsoleFleet) -> None:
    for _ in range(3):
        assert generate(console_fleet.url, console_fleet.admin).status_code == 200
    tab.goto()
    expect(tab.page.locator("#page-signin")).to_be_visible()
    tab.screenshot("signin")
    tab.sign_in(console_fleet.admin, "ops-admin")
    expect(tab.page.locator('[data-node="node-a"]')).to_have_attribute("data-state", "up")
    expect(tab.page.locator("#nodes .model")).not_to_have_count(0)  # llama3.2 loaded where it ran
    tab.screenshot("fleet")
    tab.show("models")
    expect(tab.page.locator('#matrix tr[data-model="qwen2.5:7b"]')).not_to_have_class("drift")
    expect(tab.page.locator('#matrix tr[data-model="mistral:7b"]')).to_have_class("drift")
    tab.screenshot("models")
    tab.show("traffic")
    expect(tab.page.locator('#legend-requests [data-series="requests/s"] b')).not_to_have_text("–")
    tab.show("keys")
    expect(tab.page.locator('#keys tr[data-key="team-qwen"]')).to_be_visible()
    tab.screenshot("keys")

    assert tab.errors == []
    outside = [u for u in tab.requests if not u.startswith(console_fleet.url + "/")]
    assert outside == [], outside
    assert not any("crl_" in u for u in tab.requests), "the key must never travel in a URL"
    assert tab.page.context.cookies() == []
    stored = tab.page.evaluate("sessionStorage.getItem('corral.key')")
    assert stored == console_fleet.admin and tab.page.evaluate("localStorage.length") == 0
    weight = sum(tab.asset_bytes.values())
    assert 0 < weight < 200_000, tab.asset_bytes
    csp = httpx.get(console_fleet.url + "/ui").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp


def test_fleet_view_follows_a_node_killed_and_restarted_and_reconnects_after_corral_restarts(
    tab: Tab, console_fleet: ConsoleFleet
) -> None:
    tab.sign_in(console_fleet.admin, "ops-admin")
    card = tab.page.locator('[data-node="node-b"]')
    expect(card).to_have_attribute("data-state", "up")
    console_fleet.kill_sim("node-b")
    expect(card).to_have_attribute("data-state", "down")
    expect(card.locator(".lasterr")).to_be_visible()
    console_fleet.start_sim_again("node-b")
    expect(card).to_have_attribute("data-state", "up")

    console_fleet.corral.stop()
    expect(tab.page.locator("#banner")).to_contain_text("unreachable")
    console_fleet.restart_corral()
    expect(tab.page.locator("#banner")).to_be_hidden()
    expect(tab.page.locator("body")).to_have_attribute("data-live", "1")
    expect(tab.page.locator('[data-node="node-a"]')).to_have_attribute("data-state", "up")
    expect(tab.page.locator("#who")).to_contain_text("ops-admin")  # still signed in, no reload


def test_traffic_charts_move_under_load(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.sign_in(console_fleet.admin, "ops-admin")
    tab.page.goto(console_fleet.url + "/ui#/traffic")
    tab.page.select_option("#scope", "model:qwen2.5:7b")  # a scope no other test sends to
    tokens = tab.page.locator('#legend-tokens [data-series="tokens/s"] b')
    expect(tokens).to_have_text("0")
    before = tab.page.evaluate("document.getElementById('chart-tokens').toDataURL()")
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            generate(console_fleet.url, console_fleet.admin, "qwen2.5:7b")

    workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        expect(tokens).not_to_have_text("0", timeout=20_000)
        expect(tab.page.locator('#legend-requests [data-series="requests/s"] b')).not_to_have_text("0")
        expect(tab.page.locator('#legend-ttft [data-series="p50"] b')).not_to_have_text("–")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    after = tab.page.evaluate("document.getElementById('chart-tokens').toDataURL()")
    assert after != before, "the tokens/s chart drew nothing new"
    tab.screenshot("traffic")


def test_admin_drains_and_undrains_a_node_through_the_ui(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.sign_in(console_fleet.admin, "ops-admin")
    card = tab.page.locator('[data-node="node-a"]')
    expect(card).to_have_attribute("data-state", "up")
    card.locator("button[data-action=drain]").click()
    expect(tab.page.locator("#confirm-text")).to_contain_text("Drain node-a?")
    tab.page.click("#confirm-ok")
    wait_for(lambda: console_fleet.node_state("node-a") == "draining", 10, "node-a draining in /internal/status")
    expect(card).to_have_attribute("data-state", "draining")
    tab.screenshot("fleet-draining")

    card.locator("button[data-action=undrain]").click()
    tab.page.click("#confirm-cancel")  # a cancelled confirmation changes nothing
    assert console_fleet.node_state("node-a") == "draining"
    card.locator("button[data-action=undrain]").click()
    tab.page.click("#confirm-ok")
    wait_for(lambda: console_fleet.node_state("node-a") == "up", 10, "node-a up again in /internal/status")
    expect(card).to_have_attribute("data-state", "up")

    def audited() -> bool:
        text = console_fleet.audit.read_text() if console_fleet.audit.exists() else ""
        return '"node_drained"' in text and '"node_undrained"' in text and '"by":"ops-admin"' in text

    wait_for(audited, 10, "the drain and undrain in the audit log, by the admin key")
    assert tab.errors == []


def test_user_key_sees_only_its_models_and_no_admin_page_or_api(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.sign_in(console_fleet.user, "team-qwen")
    expect(tab.page.locator('#nav a[data-page="keys"]')).to_be_hidden()
    expect(tab.page.locator('[data-node="node-a"]')).to_be_visible()
    assert tab.page.locator("button[data-action]").count() == 0
    assert tab.page.locator("#add-node").is_hidden()
    tab.show("models")
    expect(tab.page.locator("#matrix tbody tr")).to_have_count(1)
    expect(tab.page.locator('#matrix tr[data-model="qwen2.5:7b"]')).to_be_visible()
    tab.page.goto(console_fleet.url + "/ui#/keys")
    expect(tab.page.locator("#page-denied")).to_be_visible()
    tab.page.goto(console_fleet.url + "/ui#/traffic")
    expect(tab.page.locator("#scope option")).to_have_count(2)  # everything it may see, and its one model
    assert tab.page.locator("#scope").evaluate("s => [...s.options].map(o => o.value)") == ["all", "model:qwen2.5:7b"]

    user = console_fleet.user
    assert tab.fetch("GET", "/ui/api/keys", user) == 403
    assert tab.fetch("GET", "/admin/keys", user) == 403
    assert tab.fetch("GET", "/admin/backends", user) == 403
    assert tab.fetch("POST", "/admin/backends/node-a/drain", user) == 403
    assert tab.fetch("GET", "/ui/api/traffic?scope=node:node-a", user) == 403
    assert tab.fetch("GET", "/ui/api/traffic?scope=model:llama3.2:1b", user) == 403
    assert console_fleet.node_state("node-a") == "up"


def test_key_created_in_the_ui_works_then_rotated_and_revoked(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.sign_in(console_fleet.admin, "ops-admin")
    tab.show("keys")
    form = tab.page.locator("#create-key")
    form.locator("[name=name]").fill("made-in-ui")
    form.locator("[name=models]").fill("llama3.2:1b")
    form.locator("[name=rpm]").fill("120")
    form.locator("button[type=submit]").click()
    tab.page.click("#confirm-ok")
    secret = tab.page.locator("#secret-key")
    expect(secret).to_contain_text("crl_")
    key = secret.inner_text()
    tab.screenshot("key-created")
    tab.page.click("#secret-done")
    assert secret.inner_text() == ""  # shown once: gone from the page once closed

    assert generate(console_fleet.url, key, stream=False).status_code == 200
    assert generate(console_fleet.url, key, "qwen2.5:7b", stream=False).status_code == 403
    row = tab.page.locator('#keys tr[data-key="made-in-ui"]')
    # Its use against its limit: both requests count (the refused model is refused after the rate check).
    expect(row.locator(".rpm")).to_have_text("2 / 120")

    row.locator("button[data-action=rotate]").click()
    tab.page.click("#confirm-ok")
    expect(secret).to_contain_text("crl_")
    rotated = secret.inner_text()
    tab.page.click("#secret-done")
    assert rotated != key
    wait_for(lambda: generate(console_fleet.url, key, stream=False).status_code == 401, 10, "the old secret refused")
    assert generate(console_fleet.url, rotated, stream=False).status_code == 200

    row.locator("button[data-action=revoke]").click()
    tab.page.click("#confirm-ok")
    expect(row).to_have_class("revoked")
    revoked = lambda: generate(console_fleet.url, rotated, stream=False).status_code == 401  # noqa: E731
    wait_for(revoked, 10, "the revoked key refused")
    assert tab.errors == []


def test_read_only_on_the_loopback_no_keys_default(browser: Any, tmp_path: Any) -> None:
    sim = start_sim("llama3.2:1b", extra=["--load-seconds", "0"], timeout=40)
    config = {
        "backends": [{"name": "local", "url": sim.url}],
        "health": {"interval_s": 0.3, "rise": 1, "fall": 1},
        "audit": {"path": str(tmp_path / "a.log")},
    }
    corral = start_corral(config, timeout=40)
    context = browser.new_context(viewport={"width": 1280, "height": 560})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(corral.url + "/ui")
        notice = page.locator("#notice")
        expect(notice).to_contain_text("read-only")
        expect(notice).to_contain_text("auth.enabled: true")
        expect(page.locator('[data-node="local"]')).to_have_attribute("data-state", "up")
        assert page.locator("button[data-action]").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "read-only.png"))
        page.goto(corral.url + "/ui#/keys")
        expect(page.locator("#page-nokeys")).to_be_visible()
        assert errors == []
        # The admin API refuses a web page while keys are off, whatever the page tries.
        status = page.evaluate("async () => (await fetch('/admin/backends/local/drain', {method: 'POST'})).status")
        assert status == 403
        assert httpx.get(corral.url + "/internal/status", timeout=5).json()["nodes"][0]["state"] == "up"
    finally:
        context.close()
        corral.stop()
        sim.stop()
