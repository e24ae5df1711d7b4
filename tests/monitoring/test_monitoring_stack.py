"""The monitoring stack is checked, not just shipped: promtool and amtool pass, every alert has unit
tests that fire and stay quiet, the dashboard's queries parse, and every metric they use is exported
by a running Corral after traffic."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from procs import start_corral, start_sim
from tests.monitoring.promql_names import MONITORING, dashboard_exprs, used_metrics, used_metrics_missing_from

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's prometheus package")


def run(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_prometheus_config_and_rules_are_valid() -> None:
    result = run("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sorted(str(p.relative_to(MONITORING)) for p in (MONITORING / "rules").glob("*.yml"))
    result = run("promtool", "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_pass() -> None:
    result = run("promtool", "test", "rules", "corral-alerts-test.yml", cwd=MONITORING / "rules" / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((MONITORING / "rules" / "corral-alerts.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tests = yaml.safe_load((MONITORING / "rules" / "tests" / "corral-alerts-test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == tested, "every alert has a firing test"
    assert {"CorralNodeDown", "CorralNoHealthyNode"} <= quiet
    for t in tests:  # the other tests carry a series that must not fire alongside one that must
        assert len(t["input_series"]) >= 2


def test_alertmanager_config_and_routes() -> None:
    assert run("amtool", "check-config", "alertmanager.yml").returncode == 0
    critical = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yml", "severity=critical")
    assert critical.stdout.strip() == "pager"
    warning = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yml", "severity=warning")
    assert warning.stdout.strip() == "default"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:panel_{i}",
                        "expr": expr.replace("$__rate_interval", "5m").replace("$__range", "1h"),
                    }
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules["groups"][0]["rules"]) >= 16


def test_every_metric_used_is_exported_by_a_running_corral() -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "500", "--load-seconds", "0.3"])
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}]})
    try:
        for _ in range(3):  # the first waits for a model load (0.3 s), the others do not
            with httpx.stream(
                "POST",
                corral.url + "/api/chat",
                timeout=30,
                json={"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}},
            ) as r:
                list(r.iter_lines())
        httpx.post(corral.url + "/api/generate", json={"model": "no-such"}, timeout=30)
        scrape = httpx.get(corral.url + "/metrics", timeout=10).text
    finally:
        corral.stop()
        sim.stop()
    assert used_metrics_missing_from(scrape) == set()
    assert len(used_metrics()) >= 15
    lint = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dashboard_validates_against_grafanas_own_schema() -> None:
    import json

    import jsonschema

    root = MONITORING.parents[1]
    result = subprocess.run(
        ["bash", "scripts/grafana-schema.sh"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schema = json.loads((root / ".cache" / "grafana-schema" / "dashboard.schema.json").read_text())
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "corral.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [e.message for e in validator.iter_errors(dashboard)] == []
    broken = {**dashboard, "panels": [{**dashboard["panels"][0], "gridPos": "top left"}], "editable": "yes"}
    assert len(list(validator.iter_errors(broken))) >= 2  # the schema does catch mistakes
