from pathlib import Path

import pytest

from corral.app.fleet import Fleet
from corral.config import ConfigError, load_settings
from corral.domain.breaker import CircuitBreaker


def test_defaults_and_minimum_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('server: {host: 127.0.0.1, port: 8080}\nbackends:\n  - {name: a, url: "http://127.0.0.1:11434"}\n')
    settings = load_settings(path)
    assert settings.routing.strategy == "model-aware"
    backend = settings.backends[0]
    assert (backend.host, backend.port, backend.type) == ("127.0.0.1", 11434, "ollama")


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: 8080}\n")
    monkeypatch.setenv("CORRAL_SERVER__PORT", "9000")
    monkeypatch.setenv("CORRAL_ROUTING__STRATEGY", "round-robin")
    settings = load_settings(path)
    assert settings.server.port == 9000
    assert settings.routing.strategy == "round-robin"


def refused_keys(tmp_path: Path, text: str) -> set[str]:
    """The keys a config file's refusal names."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    return {key for key, _ in err.value.problems}


def test_problems_name_every_key(tmp_path: Path) -> None:
    text = "backends:\n  - {name: a, url: 'http://x:1', weight: -1, colour: red}\nqueue: {max_len: -5}\n"
    keys = refused_keys(tmp_path, text)
    assert keys == {"backends[0].weight", "backends[0].colour", "queue.max_len"}


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: {port: [}\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(broken)


def test_backend_urls(tmp_path: Path) -> None:
    for url, ok in (
        ("http://h", True),
        ("https://h:8443/prefix/", True),
        ("h:11434", False),
        ("http://h:99999", False),
        ("http://h/?q=1", False),
    ):
        path = tmp_path / "c.yaml"
        path.write_text(f"backends:\n  - {{name: a, url: '{url}'}}\n")
        if ok:
            assert load_settings(path).backends[0].url == url.rstrip("/")
        else:
            with pytest.raises(ConfigError, match=r"backends\[0\]\.url"):
                load_settings(path)


def test_vram_gb_reaches_routing_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backends:\n  - {name: a, url: 'http://127.0.0.1:11434', vram_gb: 24}\n")
    settings = load_settings(path)
    node = Fleet().add(settings.backends[0], settings.health, CircuitBreaker())
    assert node.view(0.0).vram_bytes == 24 * 2**30
    for bad in ("0", "-8", "lots"):
        path.write_text(f"backends:\n  - {{name: a, url: 'http://127.0.0.1:11434', vram_gb: {bad}}}\n")
        with pytest.raises(ConfigError) as err:
            load_settings(path)
        assert [key for key, _ in err.value.problems] == ["backends[0].vram_gb"]


def test_prefix_affinity_settings_are_checked_by_name(tmp_path: Path) -> None:
    keys = refused_keys(tmp_path, "routing: {prefix_index_size: 0, prompt_eval_rate: -1, prefix_affinity: maybe}\n")
    assert keys == {"routing.prefix_index_size", "routing.prompt_eval_rate", "routing.prefix_affinity"}


def test_residency_settings_are_checked_by_name(tmp_path: Path) -> None:
    keys = refused_keys(tmp_path, "residency: {hold_s: -1, rise: 0, hot: soon}\n")
    assert keys == {"residency.hold_s", "residency.rise", "residency.hot"}
    keys = refused_keys(tmp_path, "residency: {fill: 1.5, surge: 0, calm: many}\n")
    assert keys == {"residency.fill", "residency.surge", "residency.calm"}


def test_keep_warm_settings_are_checked_by_name(tmp_path: Path) -> None:
    keys = refused_keys(tmp_path, "residency: {keep_warm: maybe, keep_warm_margin_s: 5}\n")
    assert keys == {"residency.keep_warm", "residency.keep_warm_margin_s"}
    # A refreshed runner must stay finite (evicted like any other), and outlive the margin.
    for bad in ("'-1'", "'0'", "soon"):
        text = f"residency: {{keep_warm: true, keep_alive: {bad}}}\n"
        assert refused_keys(tmp_path, text) == {"residency.keep_alive"}
    text = "residency: {keep_warm: true, keep_alive: 30s}\n"
    assert refused_keys(tmp_path, text) == {"residency.keep_warm_margin_s"}
    path = tmp_path / "c.yaml"
    path.write_text("residency: {keep_alive: '-1'}\n")  # off by default: the controller's keys as before
    assert load_settings(path).residency.keep_warm is False
    path.write_text("residency: {keep_warm: true, keep_alive: 10m, keep_warm_margin_s: 90}\n")
    assert load_settings(path).residency.keep_warm_margin_s == 90
