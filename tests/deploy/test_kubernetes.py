"""Each Kustomize overlay renders (`kubectl kustomize`) and the result passes `kubernetes-validate
--strict` (which refuses misspelt keys, not only wrong types). On the rendered objects: the pods are
hardened, Corral's probes ask /health and /ready, secrets are only referenced, the network policies
let only Corral reach the nodes, the shipped Corral configuration is one Corral accepts and names the
StatefulSet's pods, and the model-preload script really pulls models from real nodes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from procs import free_port, start_sim
from tests.deploy.tools import KUBERNETES, config_check, run, tool

OVERLAYS = ["dev", "prod"]
_RENDERED: dict[str, str] = {}


def render(overlay: str) -> str:
    if overlay not in _RENDERED:
        result = run(tool("kubectl", "kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay))
        assert result.returncode == 0, result.stderr
        _RENDERED[overlay] = result.stdout
    return _RENDERED[overlay]


def objects(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(render(overlay)) if d}


def validate(path: Path, *version: str) -> Any:
    return run(tool("kubernetes-validate", "PyPI kubernetes-validate"), "--strict", "--quiet", *version, str(path))


def pod_specs(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: obj["spec"]["template"]["spec"]
        for (kind, name), obj in objs.items()
        if kind in ("Deployment", "StatefulSet", "Job")
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render(overlay))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Also against the oldest Kubernetes still common in production: nothing newer is relied on.
    result = validate(path, "--kubernetes-version", "1.28.0")
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {kind for kind, _ in objects(overlay)}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "StatefulSet",
        "Job",
        "ServiceAccount",
        "Namespace",
    } <= kinds


def test_strict_validation_rejects_a_misspelt_key(tmp_path: Path) -> None:
    """Proves the validator runs strictly on our objects: one misspelt key in the Deployment fails it."""
    docs = [d for d in yaml.safe_load_all(render("prod")) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = validate(path)
    assert result.returncode != 0
    assert "readinessProbes" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_and_without_capabilities(overlay: str) -> None:
    for name, spec in pod_specs(objects(overlay)).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "cpu" in container["resources"]["requests"] and "memory" in container["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_corral_deployment_probes_scaling_and_spread(overlay: str) -> None:
    objs = objects(overlay)
    spec = objs[("Deployment", "corral")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and spec["terminationGracePeriodSeconds"] > 30 + int(pre_stop[1]), (
        "longer than the preStop pause plus server.shutdown_grace_s"
    )
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # One worker process per requested core, from the downward API (rounded up to whole cores).
    args = container["args"]
    assert args[args.index("--workers") + 1] == "$(CORRAL_WORKERS)"
    (workers,) = [e for e in container["env"] if e["name"] == "CORRAL_WORKERS"]
    field = workers["valueFrom"]["resourceFieldRef"]
    assert field["resource"] == "requests.cpu" and field["divisor"] == "1" and field["containerName"] == "corral"
    cpu = str(container["resources"]["requests"]["cpu"])
    if not cpu.endswith("m") and int(cpu) > 1:  # several workers: their limits need Redis
        assert any(e["name"] == "CORRAL_LIMITS__REDIS_URL" for e in container["env"])
    hpa = objs[("HorizontalPodAutoscaler", "corral")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "corral" and hpa["maxReplicas"] > hpa["minReplicas"] >= 1
    assert objs[("PodDisruptionBudget", "corral")]["spec"]["maxUnavailable"] == 1
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/corral", "/var/lib/corral", "/tmp"} <= mounts, "writable paths are volumes"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_written(overlay: str) -> None:
    objs = objects(overlay)
    assert not [name for kind, name in objs if kind == "Secret"]
    text = render(overlay)
    assert "password" not in text.lower().replace("passwords", "")
    env = {e["name"]: e for e in objs[("Deployment", "corral")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    if overlay == "prod":
        assert env["CORRAL_AUTH__STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "corral-secrets"
        tls = objs[("Ingress", "corral")]["spec"]["tls"][0]
        assert tls["secretName"] == "corral-tls"
    assert env["CORRAL_LIMITS__REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "corral-secrets"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_corral_reaches_the_nodes_and_only_the_front_reaches_corral(overlay: str) -> None:
    objs = objects(overlay)
    policies = {name: obj["spec"] for (kind, name), obj in objs.items() if kind == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    to_nodes = [
        p
        for p in policies.values()
        if p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "ollama"
    ]
    (rule,) = to_nodes[0]["ingress"]
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}
    assert allowed == {"corral", "model-preload"}
    assert all("namespaceSelector" not in peer for peer in rule["from"])
    to_corral = [
        p
        for p in policies.values()
        if p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "corral"
    ]
    ports = {port["port"] for rule in to_corral[0]["ingress"] for port in rule["ports"]}
    assert ports == {8080, 9464}
    for rule in to_corral[0]["ingress"]:
        assert all("namespaceSelector" in peer for peer in rule["from"])


def test_dev_runs_simulated_nodes_and_prod_gpu_nodes() -> None:
    dev = objects("dev")[("StatefulSet", "ollama")]["spec"]
    prod = objects("prod")[("StatefulSet", "ollama")]["spec"]
    (sim,) = dev["template"]["spec"]["containers"]
    assert sim["command"] == ["corral", "sim"] and sim["image"].split("/")[-1].startswith("corral:")
    assert "volumeClaimTemplates" not in dev
    assert "nvidia.com/gpu" not in str(dev)
    (node,) = prod["template"]["spec"]["containers"]
    assert node["image"].startswith("ollama/ollama:")
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert prod["volumeClaimTemplates"][0]["metadata"]["name"] == "models"
    assert {"mountPath": "/models", "name": "models"} in node["volumeMounts"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_corral_accepts_the_shipped_configuration_and_it_names_every_node(overlay: str, tmp_path: Path) -> None:
    objs = objects(overlay)
    (config_map,) = [
        obj for (kind, name), obj in objs.items() if kind == "ConfigMap" and name.startswith("corral-config")
    ]
    path = tmp_path / "corral.yaml"
    path.write_text(config_map["data"]["corral.yaml"])
    container = objs[("Deployment", "corral")]["spec"]["template"]["spec"]["containers"][0]
    # The environment the pod gets, with stand-ins for the values that come from the Secret.
    env = {e["name"]: e.get("value", "postgresql://corral:x@db:5432/corral") for e in container["env"]}
    env["CORRAL_LIMITS__REDIS_URL"] = "redis://:x@redis:6379/0"
    result = config_check(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    nodes = objs[("StatefulSet", "ollama")]["spec"]
    service = objs[("Service", "ollama")]["spec"]
    assert service["clusterIP"] == "None", "headless: one DNS name per node"
    expected = [f"http://ollama-{i}.ollama:11434" for i in range(nodes["replicas"])]
    assert [b["url"] for b in config["backends"]] == expected
    volumes = {v["name"]: v for v in objs[("Deployment", "corral")]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    # Corral and the preload Job use the image the overlay names.
    job = objs[("Job", "model-preload")]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == container["image"] and job["image"].endswith(":0.1.0")


def test_the_preload_script_pulls_every_model_onto_real_nodes() -> None:
    script = KUBERNETES / "base" / "preload-models.py"
    node = start_sim("llama3.2:1b", extra=["--load-seconds", "0.05"])
    try:
        env = {**os.environ, "NODES": node.url, "MODELS": "llama3.2:1b qwen2.5:0.5b"}
        result = run(sys.executable, str(script), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "llama3.2:1b: ready in" in result.stdout and "qwen2.5:0.5b: ready in" in result.stdout
        # A model the registry does not have fails the Job; so does a node that never comes up (after
        # NODE_WAIT_S, instead of hanging), while the nodes that are up still get their models.
        down = f"http://127.0.0.1:{free_port()}"
        env = {**env, "NODES": f"{down} {node.url}", "MODELS": "no-such-model-missing:1b", "NODE_WAIT_S": "1"}
        result = run(sys.executable, str(script), env=env)  # the simulator refuses names with "missing"
        assert result.returncode == 1
        assert f"{down} did not answer" in result.stderr
        assert (
            f"{node.url} no-such-model-missing:1b: HTTP 500" in result.stderr and "file does not exist" in result.stderr
        )
    finally:
        node.stop()
