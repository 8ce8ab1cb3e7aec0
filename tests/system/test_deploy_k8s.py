"""The Kubernetes manifests and the Grafana dashboard, rendered by the real `kubectl kustomize` and checked
offline: every object against the Kubernetes schemas (kubernetes-validate), and the settings an operator
relies on. tests/system/test_deploy_rehearsal.py runs what they describe."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT
from kubelet import K8S, one, render, render_variant

from tfclassify.server.settings import ServerSettings

OVERLAYS = ("cpu", "gpu")
#: Kubernetes versions validated against: an older supported one, and the newest kubernetes-validate bundles.
VERSIONS = ("1.32.0", "1.37.0")
#: Custom resources have no schema in kubernetes-validate; each is skipped for this reason.
CRDS = {"ServiceMonitor": "a Prometheus Operator CRD: its schema ships with the operator, not with Kubernetes",
        "Certificate": "a cert-manager CRD: its schema ships with cert-manager, not with Kubernetes"}


def render_overlay(overlay: str) -> list[dict]:
    return render(K8S / "overlays" / overlay)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render_overlay(request.param)


def server_container(docs: list[dict]) -> dict:
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def arg(container: dict, name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    return value

def validate(docs: list[dict]) -> None:
    for doc in docs:
        if doc["kind"] in CRDS:
            continue  # the reason is in CRDS
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any error


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    _, docs = rendered
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
                                         "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
                                         "ServiceMonitor"}
    validate(docs)


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
    assert ports == {"grpc": int(arg(container, "grpc-port")), "rest": int(arg(container, "http-port")),
                     "http": int(arg(container, "metrics-port"))}
    assert ports == {"grpc": defaults["grpc_port"].default, "rest": defaults["http_port"].default,
                     "http": defaults["metrics_port"].default}
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
    docs = render_overlay("gpu")
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
    assert f'"{custom}"' in (ROOT / "server" / "core" / "metrics.py").read_text(), "a metric the server really exports"
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert any(rule["name"]["as"] == custom for rule in rules)



def test_the_scoring_jobs_validate_and_shard_by_the_completion_index():
    score_docs, merge_docs = render(K8S / "scoring"), render(K8S / "scoring" / "merge")
    assert sorted(d["kind"] for d in score_docs) == ["ConfigMap", "Job", "PersistentVolumeClaim"]
    assert [d["kind"] for d in merge_docs] == ["Job"]
    validate(score_docs + merge_docs)
    job, merge = one(score_docs, "Job")["spec"], one(merge_docs, "Job")["spec"]
    config = one(score_docs, "ConfigMap")["data"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(config["SHARDS"]), "one pod per shard"
    [score] = job["template"]["spec"]["containers"]
    assert "--shard=$(SHARD_INDEX)/$(SHARDS)" in score["args"] and "--resume" in score["args"]
    assert "--output=/work/results/shard-$(SHARD_INDEX).jsonl" in score["args"]
    [index] = [e for e in score["env"] if e["name"] == "SHARD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert config["SERVER"].startswith("dns:///tfclassify-headless."), "client-side balancing over every pod"
    [merger] = merge["template"]["spec"]["containers"]
    assert "/work/results/shard-*.jsonl" in merger["args"][0]
    for spec, container in ((job, score), (merge, merger)):
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert re.fullmatch(r"[\w.\-/]+/tfclassify-client:0\.1\.0", container["image"]), container["image"]
        [volume] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == one(score_docs, "PersistentVolumeClaim")["metadata"]["name"]
    assert one(score_docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_object_storage_component_validates_and_keeps_the_pod_locked_down(tmp_path):
    docs = render_variant(tmp_path, {"resources": ["../overlays/gpu"],
                                     "components": ["../components/models-from-object-storage"]})
    validate(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [sidecar] = pod["initContainers"]
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True and {"requests", "limits"} <= set(
        sidecar["resources"])
    assert ":" in sidecar["image"] and not sidecar["image"].endswith(":latest")
    assert "nvidia.com/gpu" in server_container(docs)["resources"]["limits"], "the overlay's patches are kept"


def test_the_tls_components_wire_the_certificate_secret_into_server_probes_scrapes_and_scoring(tmp_path):
    docs = render_variant(tmp_path / "serve", {"resources": ["../overlays/gpu"], "components": ["../components/tls"]})
    validate(docs)
    certificate = one(docs, "Certificate")["spec"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(docs)
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == certificate["secretName"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount, "a subPath mount never sees a renewal"
    for flag, key in (("tls-cert", "tls.crt"), ("tls-key", "tls.key")):
        assert arg(container, flag) == f"{mount['mountPath']}/{key}"
    assert arg(container, "metrics-tls") == "tls", "not mtls: the kubelet has no client certificate"
    assert "nvidia.com/gpu" in container["resources"]["limits"], "the overlay's patches are kept"
    # The kubelet's gRPC probes have no TLS: every probe is an HTTPS GET of the server's health paths.
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for name, path in paths.items():
        assert container[name]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTPS"} and \
            "grpc" not in container[name], name
    http = (ROOT / "server" / "http.py").read_text()
    assert '"/healthz"' in http and '"/readyz"' in http
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": certificate["secretName"], "key": "ca.crt"}
    assert endpoint["tlsConfig"]["serverName"] in certificate["dnsNames"]
    # Every name a client reaches the server by is in the certificate.
    services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    for service in services:
        assert {service, f"{service}.default.svc", f"{service}.default.svc.cluster.local"} <= set(
            certificate["dnsNames"]), service
    scoring = render_variant(tmp_path / "score", {"resources": ["../scoring"], "components": ["../components/tls-client"]})
    validate(scoring)
    server = re.fullmatch(r"dns:///([\w.-]+):8500", one(scoring, "ConfigMap")["data"]["SERVER"]).group(1)
    assert server in certificate["dnsNames"]
    job = one(scoring, "Job")["spec"]["template"]["spec"]
    [score] = job["containers"]
    [ca_volume] = [v for v in job["volumes"] if "secret" in v]
    assert ca_volume["secret"]["secretName"] == certificate["secretName"]
    assert ca_volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "never the server's key"
    [ca_mount] = [m for m in score["volumeMounts"] if m["name"] == ca_volume["name"]]
    [ca_env] = [e for e in score["env"] if e["name"] == "TFCLASSIFY_TLS_CA"]
    assert ca_env["value"] == f"{ca_mount['mountPath']}/ca.crt"
    assert "TFCLASSIFY_TLS_CA" in (ROOT / "client" / "cli" / "arguments.py").read_text()


def test_the_dashboard_covers_the_metrics_operators_watch():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tfclassify-dashboard.json").read_text())
    exported = set(re.findall(r'"(tfclassify_\w+)"', (ROOT / "server" / "core" / "metrics.py").read_text()))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(tfclassify_\w+?)(?:_total|_bucket|_sum|_count)?\b", e)}
    assert used <= exported, used - exported
    for needed in ("tfclassify_requests", "tfclassify_request_duration_seconds", "tfclassify_queued_images",
                   "tfclassify_batch_size_images", "tfclassify_predictions", "tfclassify_model_version_state"):
        assert needed in used, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
