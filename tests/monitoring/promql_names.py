"""Metric names used by the alert rules and the dashboard, and whether a scrape exports them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
_NAME = re.compile(r"\b(corral_[a-z0-9_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum")


def rule_exprs() -> list[str]:
    exprs = []
    for path in sorted((MONITORING / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [rule["expr"] for rule in group["rules"]]
    return exprs


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "corral.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def used_metrics() -> set[str]:
    names: set[str] = set()
    for expr in rule_exprs() + dashboard_exprs():
        names |= set(_NAME.findall(expr))
    return names


def exported(scrape: str) -> set[str]:
    names = set()
    for line in scrape.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def used_metrics_missing_from(scrape: str) -> set[str]:
    have = exported(scrape)
    missing = set()
    for name in used_metrics():
        if name in have:
            continue
        if name.endswith(_SUFFIXES) and name in have:
            continue
        missing.add(name)
    return missing
