"""A rehearsal of the Kubernetes deployment without a cluster: the CPU overlay's Deployment container (its
image's ENTRYPOINT and ENV, the manifest's args, env, mounts and ports) runs as a local process on a real
model repository with the ConfigMap laid out as the kubelet does; it is probed as the kubelet probes it,
scraped by a real Prometheus the way the ServiceMonitor says, and queried with the HPA's and the Grafana
dashboard's PromQL; its ConfigMap is updated in place; the scoring Job's pods (two indexes) and the merge
Job run against it; and finally it gets SIGTERM while requests are in flight."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from archives import broken_files, image_members, read_jsonl, write_zip
from certificates import Authority
from conftest import BIN, FASHION_DIR, FASHION_LABELS, ServerProcess, drain_and_check, http_get, wait_until
from kubelet import (
    DOCKER,
    K8S,
    ImageConfig,
    Pod,
    container_env,
    grpc_probe,
    image_config,
    one,
    probe,
    render,
    render_variant,
    wait_for_probe,
    write_volume,
)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfclassify.client import ClassifierClient, TfclassifyError
from tfclassify.client.tls import channel_credentials
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tfclassify-dashboard.json"
#: What Grafana puts in the dashboard's queries: "All" of the job and model variables is ".*"; with a 15 s
#: scrape interval $__rate_interval is 1m; the dashboard's default range is the last hour.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$model": ".*", "$job": ".*"}
#: The labels the Prometheus Operator gives the targets of a ServiceMonitor, for the rehearsal's one pod.
POD_LABELS = {"namespace": "default", "pod": "tfclassify-7d9f8-rehearsal", "service": "tfclassify",
              "container": "tfclassify", "endpoint": "http"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RehearsedServer(ServerProcess):
    """The Deployment's container, started from the rendered manifest (a ServerProcess, for its helpers)."""

    def __init__(self, docs: list[dict], model_repo: Path | None, root: Path,
                 secrets: dict[str, dict[str, bytes]] | None = None) -> None:
        deployment = one(docs, "Deployment")
        self.pod_spec = deployment["spec"]["template"]["spec"]
        [self.container] = self.pod_spec["containers"]
        self.image: ImageConfig = image_config(DOCKER / "Dockerfile.cpu")
        self.configmap = one(docs, "ConfigMap", "tfclassify-models")
        [self.model] = re.findall(r'base_path: "(\w+)"', self.configmap["data"]["models.pbtxt"])
        self.pod = Pod(root)
        self.pod.mount(self.container)
        self.secret_dirs: dict[str, Path] = {}  # by Secret name: where the kubelet puts its keys
        self.pod.ports = {p["containerPort"]: free_port() for p in self.container["ports"]}
        volumes = {v["name"]: v for v in self.pod_spec["volumes"]}
        for m in self.container["volumeMounts"]:
            if "configMap" in volumes[m["name"]]:
                self.config_dir = self.pod.mounts[m["mountPath"]]
                write_volume(self.config_dir, self.configmap["data"])
            elif "secret" in volumes[m["name"]]:
                self.secret_dirs[volumes[m["name"]]["secret"]["secretName"]] = self.pod.mounts[m["mountPath"]]
            elif "persistentVolumeClaim" in volumes[m["name"]] and model_repo is not None:
                # The PVC holds the model the ConfigMap names, as `tfclassify train` would publish it.
                shutil.copytree(model_repo / "fashion", self.pod.mounts[m["mountPath"]] / self.model)
        for name, folder in self.secret_dirs.items():
            write_volume(folder, (secrets or {})[name])  # a pod waits for its Secrets
        env = container_env(self.container, {})
        self.argv = self.pod.command(self.container, self.image, env)
        self.grpc_port = self.pod.ports[self.port("grpc")]
        self.metrics_port = self.pod.ports[self.port("http")]
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.log_path = root / "server.log"
        self._log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.pod.environ(self.image, env), cwd=root,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def port(self, name: str) -> int:
        [port] = [p["containerPort"] for p in self.container["ports"] if p["name"] == name]
        return port


@pytest.fixture(scope="module")
def cpu_docs() -> list[dict]:
    return render(K8S / "overlays" / "cpu")


@pytest.fixture(scope="module")
def deployed(cpu_docs, model_repo, tmp_path_factory) -> Iterator[RehearsedServer]:
    server = RehearsedServer(cpu_docs, model_repo, tmp_path_factory.mktemp("pod"))
    yield server
    server.stop()


class Traffic:
    """Requests through all three APIs, some refused, every 50 ms until stopped, so that every dashboard
    panel has something to show."""

    def __init__(self, server: RehearsedServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        server, images = self.server, np.random.default_rng(0).integers(0, 256, (64, 28, 28), np.uint8)
        with ClassifierClient(server.address, timeout=10, retries=0) as client, \
                grpc.insecure_channel(server.address) as ch:  # every failure is seen
            tfs = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            inference = oip_grpc.GRPCInferenceServiceStub(ch)
            predict = predict_pb2.PredictRequest()
            predict.model_spec.name = server.model
            predict.inputs["images"].CopyFrom(tf.make_tensor_proto(images[:4]))
            infer = oip.ModelInferRequest(model_name=server.model)
            infer.inputs.add(name="images", datatype="UINT8", shape=[8, 28, 28])
            infer.raw_input_contents.append(images[:8].tobytes())
            true = np.arange(len(images)) % 10  # labelled traffic: the live-accuracy panels
            while not self._stop.wait(0.05):
                client.classify(images, server.model, true_classes=true)
                tfs.Predict(predict, timeout=10)
                inference.ModelInfer(infer, timeout=10)
                try:
                    client.classify(images[:1], "no_such_model")  # NOT_FOUND, counted with model=""
                except TfclassifyError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture(scope="module")
def traffic(deployed) -> Iterator[Traffic]:
    wait_for_probe(deployed.container["startupProbe"], deployed.container, deployed.pod.ports, deployed.proc)
    traffic = Traffic(deployed)
    yield traffic
    traffic.stop()


def test_the_container_starts_and_passes_the_kubelets_probes(deployed):
    assert deployed.argv[1:2] == ["serve"], "the image's ENTRYPOINT, then the manifest's args"
    took = wait_for_probe(deployed.container["startupProbe"], deployed.container, deployed.pod.ports, deployed.proc)
    startup = deployed.container["startupProbe"]
    assert took < startup["periodSeconds"] * startup["failureThreshold"]
    liveness, readiness = deployed.container["livenessProbe"], deployed.container["readinessProbe"]
    assert {liveness["grpc"]["port"], readiness["grpc"]["port"]} <= set(deployed.pod.ports)
    assert grpc_probe(deployed.address, liveness["grpc"]["service"], liveness["timeoutSeconds"])
    # Ready once the model has loaded (after liveness): the kubelet keeps probing every periodSeconds.
    wait_until(lambda: grpc_probe(deployed.address, readiness["grpc"]["service"], readiness["timeoutSeconds"]),
               timeout=60, interval=readiness["periodSeconds"] / 5)
    assert not grpc_probe(deployed.address, "no.such.Service"), "a probe of an unknown service fails"
    # The HTTP endpoints, for environments without gRPC probes, on the container's http port.
    assert http_get(deployed.metrics_port, "/healthz") == (200, "ok\n")
    assert http_get(deployed.metrics_port, "/readyz")[0] == 200
    assert http_get(deployed.metrics_port, "/metrics")[0] == 200
    assert http_get(deployed.metrics_port, "/")[0] == 404
    log = deployed.log()
    # --log-format=json from the manifest: every line is a JSON object a log collector can parse.
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(f"model {deployed.model} version 1 available" in line["message"] for line in lines), log
    assert all(line["level"] != "ERROR" for line in lines), log


#: The rehearsal scrapes every 2 s where the ServiceMonitor says 15 s: what is tested is the endpoint (port,
#: path, scheme, TLS) and the queries, and at 15 s a rate waits up to 30 s for its two samples.
REHEARSAL_SCRAPE_INTERVAL = "2s"


def prometheus_config(monitor: dict, target: str, secret_files: dict[tuple[str, str], Path] | None = None) -> dict:
    """The scrape job the Prometheus Operator makes of the ServiceMonitor's endpoint, for one target (at
    ``REHEARSAL_SCRAPE_INTERVAL``); the Secret keys its tlsConfig names are the files
    ``secret_files[(secret, key)]`` (the operator mounts them)."""
    [endpoint] = monitor["spec"]["endpoints"]
    # Grafana's $__rate_interval is at least four scrape intervals: the dashboards' 1m windows hold the
    # two samples a rate needs at the monitor's own interval too.
    assert 4 * _seconds(endpoint["interval"]) <= _seconds(GRAFANA_VARIABLES["$__rate_interval"])
    tls = {}
    if "tlsConfig" in endpoint:
        ca = endpoint["tlsConfig"]["ca"]["secret"]
        tls = {"tls_config": {"ca_file": str((secret_files or {})[(ca["name"], ca["key"])]),
                              "server_name": endpoint["tlsConfig"]["serverName"]}}
    return {
        "global": {"scrape_interval": REHEARSAL_SCRAPE_INTERVAL, "evaluation_interval": REHEARSAL_SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": f"serviceMonitor/default/{monitor['metadata']['name']}/0",
            "metrics_path": endpoint["path"],
            "scrape_interval": REHEARSAL_SCRAPE_INTERVAL,
            "scheme": endpoint.get("scheme", "http"),
            **tls,
            "static_configs": [{"targets": [target], "labels": {**POD_LABELS, "job": "tfclassify"}}],
        }],
    }


def _seconds(duration: str) -> int:
    """Seconds in a Prometheus duration such as ``15s`` or ``1m``."""
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


class Prometheus:
    """A real Prometheus server (Debian's `prometheus`) with its HTTP query API."""

    def __init__(self, config: dict, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        check = subprocess.run(["promtool", "check", "config", str(config_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.port = free_port()
        self.log = open(folder / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._ready(), timeout=30)

    def _ready(self) -> bool:
        try:
            return http_get(self.port, "/-/ready")[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        code, body = http_get(self.port, f"/api/v1/{path}?{query}")
        answer = json.loads(body)
        assert code == 200 and answer["status"] == "success", (params, answer)
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                expr = expr.replace(name, GRAFANA_VARIABLES[name])
            assert "$" not in expr, f"an unknown variable in {panel['title']}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def adapter_query(rule: dict, pod: str) -> str:
    """prometheus-adapter's metricsQuery for the HPA's Pods metric of one pod."""
    matchers = f'namespace="{POD_LABELS["namespace"]}",pod=~"{pod}"'
    series = re.match(r"\w+", rule["seriesQuery"]).group(0)
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


def test_prometheus_scrapes_it_and_every_dashboard_and_hpa_query_returns_data(deployed, traffic, cpu_docs,
                                                                               tmp_path):
    monitor = one(cpu_docs, "ServiceMonitor")
    service = one(cpu_docs, "Service", "tfclassify")
    [port] = [p for p in service["spec"]["ports"] if p["name"] == monitor["spec"]["endpoints"][0]["port"]]
    assert port["targetPort"] == "http" and deployed.port(port["targetPort"]) in deployed.pod.ports
    prometheus = Prometheus(prometheus_config(monitor, f"127.0.0.1:{deployed.metrics_port}"), tmp_path / "prom")
    try:
        queries = dashboard_queries()
        assert len(queries) >= 20

        def all_answered() -> bool:
            return all(prometheus.query(expr) for _, expr in queries)

        # A rate needs two scrapes in its window: up to two intervals after the first scrape.
        wait_until(all_answered, timeout=90, interval=1)
        [target] = prometheus.api("targets")["activeTargets"]
        assert target["health"] == "up" and target["scrapeUrl"].endswith(monitor["spec"]["endpoints"][0]["path"])
        for title, expr in queries:
            values = [float(r["value"][1]) for r in prometheus.query(expr)]
            assert values and all(math.isfinite(v) for v in values), (title, expr, values)
        by_code = {(r["metric"]["api"], r["metric"]["code"]) for r in prometheus.query(dict(queries)[
            "Requests/s by API and status code"])}
        assert {("tfclassify", "OK"), ("tensorflow_serving", "OK"), ("open_inference", "OK"),
                ("tfclassify", "NOT_FOUND")} <= by_code
        states = prometheus.query(dict(queries)["Model version states"])
        assert [(s["metric"]["model"], s["metric"]["state"]) for s in states] == [(deployed.model, "AVAILABLE")]

        # The HPA's custom metric, as prometheus-adapter serves it: the series it discovers, then its query.
        rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
        hpa = one(cpu_docs, "HorizontalPodAutoscaler")
        [metric] = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        [rule] = [r for r in rules if r["name"]["as"] == metric]
        series = prometheus.api("series", **{"match[]": rule["seriesQuery"]})
        assert {s["pod"] for s in series} == {POD_LABELS["pod"]}
        [answer] = prometheus.query(adapter_query(rule, POD_LABELS["pod"]))
        assert answer["metric"] == {"pod": POD_LABELS["pod"]} and float(answer["value"][1]) >= 0
    finally:
        prometheus.stop()


def test_a_promotion_through_the_configmap_reaches_the_running_server(deployed, traffic, tmp_path):
    """The README's Kubernetes promotion: `tfclassify promote` on a copy of the ConfigMap's file, the real
    `kubectl create configmap --dry-run=client -o yaml` of it, and the update as the kubelet delivers it (a
    ..data symlink swap): the label is served without a restart."""
    copy = tmp_path / "models.pbtxt"
    copy.write_text(deployed.configmap["data"]["models.pbtxt"])  # what `kubectl get configmap -o jsonpath` gives
    promoted = subprocess.run(
        [str(BIN / "tfclassify"), "promote", deployed.model, "--version", "1", "--label", "stable",
         "--min-accuracy", "0.5", "--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--limit", "500",
         "--model-config", str(copy), "--wait", "0", "--server", deployed.address, "--no-progress"],
        capture_output=True, text=True, timeout=120)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    manifest = subprocess.run(
        [str(BIN / "kubectl"), "create", "configmap", "tfclassify-models", f"--from-file={copy}", "--dry-run=client",
         "-o", "yaml"], capture_output=True, text=True, check=True, timeout=60).stdout
    data = yaml.safe_load(manifest)["data"]
    assert set(data) == {"models.pbtxt"} and 'key: "stable"' in data["models.pbtxt"]
    with deployed.client() as client:
        assert not _answers_label(client, deployed.model)
        write_volume(deployed.config_dir, data)
        # The server re-reads the file every --poll-interval-s (5 s by default).
        wait_until(lambda: _answers_label(client, deployed.model), timeout=30, interval=0.5)
    assert deployed.proc.poll() is None, "no restart"


def _answers_label(client: ClassifierClient, model: str) -> bool:
    try:
        return len(client.classify(np.zeros((1, 28, 28), np.uint8), model, version_label="stable").classes) == 1
    except TfclassifyError:
        return False


def test_the_indexed_scoring_job_and_the_merge_score_every_image_once(deployed, fashion_test, tmp_path):
    # The scoring kustomization with two indexes: what an operator changes for a different pod count.
    docs = render_variant(tmp_path, {
        "resources": ["../scoring"],
        "configMapGenerator": [{"name": "tfclassify-scoring", "behavior": "merge", "literals": ["SHARDS=2"]}],
        "patches": [{"target": {"kind": "Job", "name": "tfclassify-score"}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/spec/completions", "value": 2},
            {"op": "replace", "path": "/spec/parallelism", "value": 2}])}],
    })
    job = one(docs, "Job", "tfclassify-score")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    [container] = job["spec"]["template"]["spec"]["containers"]
    client_image = image_config(DOCKER / "Dockerfile.client")

    pod = Pod(tmp_path / "volumes")
    pod.mount(container)
    env = container_env(container, configmaps, {"batch.kubernetes.io/job-completion-index": "0"})
    assert env["MODEL"] == deployed.model, "the Job scores the model the Deployment serves"
    # The archive the operator copied into the shared volume: 300 labelled PNGs and two broken files.
    images, labels = fashion_test.images[:300], fashion_test.labels[:300]
    members = image_members(images, labels, FASHION_LABELS)
    png = members[0][1]
    members += [(f"broken/{name}", data) for name, (data, _) in list(broken_files(png).items())[:2]]
    archive = Path(pod.path(env["IMAGES"]))
    archive.parent.mkdir(parents=True)
    write_zip(archive, members)
    (Path(pod.path("/work/results"))).mkdir()
    # The cluster's DNS: the headless Service's name resolves to the one rehearsed pod.
    service = re.fullmatch(r"dns:///([\w.-]+):(\d+)", env["SERVER"])
    assert service and service.group(1).startswith("tfclassify-headless.")

    procs = []
    for index in range(job["spec"]["completions"]):
        env = container_env(container, configmaps, {"batch.kubernetes.io/job-completion-index": str(index)})
        env["SERVER"] = deployed.address
        argv = pod.command(container, client_image, env)
        procs.append(subprocess.Popen(argv, env=pod.environ(client_image, env), cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    shards = sorted(Path(pod.path("/work/results")).glob("shard-*.jsonl"))
    assert [s.name for s in shards] == ["shard-0.jsonl", "shard-1.jsonl"]
    assert all(read_jsonl(s) for s in shards), "both shards hold images"

    merge = one(render(K8S / "scoring" / "merge"), "Job", "tfclassify-merge")
    [merge_container] = merge["spec"]["template"]["spec"]["containers"]
    assert merge_container["volumeMounts"] == container["volumeMounts"]
    argv = pod.command(merge_container, client_image, container_env(merge_container, {}))
    result = subprocess.run(argv, env=pod.environ(client_image, {}), cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "merged 2 shards" in result.stdout and "2 skipped" in result.stdout
    rows = read_jsonl(Path(pod.path("/work/results/predictions.jsonl")))
    assert sorted(r["source"] for r in rows) == sorted(f"images.zip/{name}" for name, _ in members), \
        "every image exactly once"
    report = json.loads(Path(pod.path("/work/results/report.json")).read_text())
    scored = [r for r in rows if "class" in r]
    right = sum(r["class"] == r["true_class"] for r in scored)
    assert report["num_images"] == 300 and report["accuracy"] == pytest.approx(right / 300)


def test_models_synced_from_object_storage_are_published_whole_and_served(model_repo, tmp_path):
    """The object-storage component: its sidecar's script, run by the real rclone (its local backend stands
    for the bucket), fills the emptyDir the rehearsed server serves from; a new version in the bucket is
    published by renaming and served without a restart."""
    docs = render_variant(tmp_path, {"resources": ["../overlays/cpu"],
                                     "components": ["../components/models-from-object-storage"]})
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    pod_spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    [sidecar] = pod_spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always", "a native sidecar: started first, kept running"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}}
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    root = tmp_path / "pod"
    pod = Pod(root)
    pod.mount(sidecar)
    [script_volume] = [m["name"] for m in sidecar["volumeMounts"] if "configMap" in volumes[m["name"]]]
    write_volume(pod.mounts["/scripts"], configmaps[volumes[script_volume]["configMap"]["name"]])

    bucket = tmp_path / "bucket"
    shutil.copytree(model_repo / "fashion" / "1", bucket / "fashion_mnist" / "1")
    (bucket / "fashion_mnist" / "notes").mkdir()  # not a version: never published
    secret = {"tfclassify-object-storage": {"MODELS_URL": f":local:{bucket}"}}  # an rclone remote
    env = container_env(sidecar, configmaps, secrets=secret)
    env["SYNC_INTERVAL_S"] = "1"  # the manifest's 60 s, shortened for the test
    sync = subprocess.Popen(pod.command(sidecar, ImageConfig([], {}), env), env=pod.environ(ImageConfig([], {}), env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server = None
    try:
        probe = [pod.path(a) for a in sidecar["startupProbe"]["exec"]["command"]]
        wait_until(lambda: subprocess.run(probe).returncode == 0, timeout=30, interval=0.2)
        repo = pod.mounts["/models"]
        assert sorted(p.name for p in repo.iterdir()) == [".staging", ".synced", "fashion_mnist"]
        assert sorted(p.name for p in (repo / "fashion_mnist").iterdir()) == ["1"]
        # The server container starts once the sidecar's startup probe passes, on the same volumes.
        server = RehearsedServer(docs, None, root)
        wait_for_probe(server.container["startupProbe"], server.container, server.pod.ports, server.proc)
        with server.client() as client:
            client.wait_for_ready(60)
            shutil.copytree(model_repo / "fashion" / "1", bucket / "fashion_mnist" / "2")
            wait_until(lambda: client.get_model_metadata("fashion_mnist").version == 2, timeout=60, interval=0.5)
            assert len(client.classify(np.zeros((2, 28, 28), np.uint8), "fashion_mnist").classes) == 2
        assert server.proc.poll() is None
    finally:
        os.killpg(sync.pid, signal.SIGKILL)
        log = sync.communicate(timeout=10)[0]
        if server is not None:
            assert server.stop() == 0, server.log()
    assert log.count("published fashion_mnist version 1") == 1 and "published fashion_mnist version 2" in log, log


def test_the_tls_component_probes_over_https_and_serves_a_renewed_certificate(model_repo, tmp_path):
    """The CPU overlay with components/tls: the server gets its certificate from the Secret cert-manager
    fills, the kubelet's probes pass over HTTPS while plain-text gRPC is refused, Prometheus scrapes it as
    the ServiceMonitor says (verifying the certificate), and a renewal written into the Secret is served
    without a restart."""
    docs = render_variant(tmp_path, {"resources": ["../overlays/cpu"], "components": ["../components/tls"]})
    certificate = one(docs, "Certificate")["spec"]

    def issued(authority: Authority) -> dict[str, bytes]:
        """The Secret as cert-manager writes it: the certificate for every dnsName, its key, the CA."""
        cert, key = authority.issue("tfclassify", server=True, dns_names=certificate["dnsNames"])
        return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": authority.pem.read_bytes()}

    ca, renewed_ca = Authority(tmp_path, "ca"), Authority(tmp_path, "renewed-ca")
    secret = certificate["secretName"]
    server = RehearsedServer(docs, model_repo, tmp_path / "pod", {secret: issued(ca)})
    prometheus = None
    try:
        container, ports = server.container, server.pod.ports
        wait_for_probe(container["startupProbe"], container, ports, server.proc)
        assert probe(container["livenessProbe"], container, ports)
        # Ready once the model is loaded: the kubelet keeps probing every periodSeconds.
        wait_until(lambda: probe(container["readinessProbe"], container, ports), timeout=60, interval=1)
        assert not grpc_probe(server.address, ""), "plain text is refused on the gRPC port"

        def classifies(authority: Authority) -> bool:
            try:
                with ClassifierClient(server.address, timeout=5, retries=0,
                                      credentials=channel_credentials(ca=authority.pem)) as client:
                    return len(client.classify(np.zeros((1, 28, 28), np.uint8), server.model).classes) == 1
            except TfclassifyError as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE, exc
                return False

        assert classifies(ca) and not classifies(renewed_ca)
        monitor = one(docs, "ServiceMonitor")
        config = prometheus_config(monitor, f"127.0.0.1:{server.metrics_port}",
                                   {(secret, "ca.crt"): server.secret_dirs[secret] / "ca.crt"})
        prometheus = Prometheus(config, tmp_path / "prom")

        def scraped() -> bool:
            targets = prometheus.api("targets")["activeTargets"]  # empty until discovery has run
            return [(t["health"], t["scrapeUrl"].split(":", 1)[0]) for t in targets] == [("up", "https")]

        wait_until(scraped, timeout=60, interval=1)

        write_volume(server.secret_dirs[secret], issued(renewed_ca))  # cert-manager renews, the kubelet swaps
        wait_until(lambda: classifies(renewed_ca), timeout=30, interval=0.5)
        assert not classifies(ca), "new connections get the renewed certificate"
        assert probe(container["readinessProbe"], container, ports)
        assert server.proc.poll() is None, "no restart"
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert server.stop() == 0, server.log()
    assert "TLS certificate reloaded" in server.log()


def test_sigterm_drains_in_flight_requests_within_the_grace_period(deployed, traffic):
    """Last: stops the rehearsed pod the way the kubelet does."""
    traffic.stop()  # only the drain's own requests in flight
    grace = deployed.pod_spec["terminationGracePeriodSeconds"]
    # 4 requests of --max-images-per-request's default: the batching queue's default limit (65,536 images).
    big = np.zeros((16384, 28, 28), np.uint8)
    drain_and_check(deployed, deployed.model, big, grace_s=grace, requests=4)
    assert deployed.proc.returncode == 0
