"""A bad configuration is refused before start, naming the key and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=60, env=env)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_good_config_passes(tmp_path: Path) -> None:
    path = write(tmp_path, {"server": {"port": 9999}, "backends": [{"name": "a", "url": "http://127.0.0.1:1"}]})
    result = corral("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_each_kind_of_mistake_is_named(tmp_path: Path) -> None:
    cases = [
        ({"servr": {}}, "servr", "unknown key"),
        ({"backends": [{"name": "a", "url": "ftp://x"}]}, "backends[0].url", "http"),
        (
            {"backends": [{"name": "a", "url": "http://h:1"}, {"name": "a", "url": "http://h:2"}]},
            "backends[1].name",
            "duplicate",
        ),
        ({"server": {"port": "eighty"}}, "server.port", "integer"),
        ({"backends": [{"name": "a", "url": "http://h:1", "type": "vllm"}]}, "backends[0].type", "ollama"),
    ]
    for data, key, reason in cases:
        result = corral("config", "check", str(write(tmp_path, data)))
        assert result.returncode == 2, data
        assert key in result.stderr and reason in result.stderr, result.stderr


def test_serve_refuses_a_bad_config_before_start(tmp_path: Path) -> None:
    path = write(tmp_path, {"routing": {"strategy": "random"}})
    result = corral("serve", "--config", str(path))
    assert result.returncode == 2
    assert "routing.strategy" in result.stderr


def test_environment_overrides_and_is_validated(tmp_path: Path) -> None:
    import os

    path = write(tmp_path, {"backends": [{"name": "a", "url": "http://127.0.0.1:1"}]})
    result = corral("config", "check", str(path), env={**os.environ, "CORRAL_SERVER__PORT": "nope"})
    assert result.returncode == 2 and "server.port" in result.stderr
