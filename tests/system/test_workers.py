"""``tfclassify serve --workers N``: worker processes on one gRPC port that look like one server from outside
(merged metrics, one readiness, hot reload in each, a dead worker restarted, one drain)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, drain_and_check, http_get, metric_value, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from tfclassify.client import ClassifierClient
from tfclassify.server.workers import merge_metrics

WORKER_0 = """# HELP tfclassify_requests_total RPCs answered.
# TYPE tfclassify_requests_total counter
tfclassify_requests_total{api="tfclassify",code="OK"} 3.0
# HELP tfclassify_queue_wait_seconds Queue wait.
# TYPE tfclassify_queue_wait_seconds histogram
tfclassify_queue_wait_seconds_bucket{le="0.1"} 2.0
tfclassify_queue_wait_seconds_bucket{le="+Inf"} 3.0
tfclassify_queue_wait_seconds_sum 0.5
tfclassify_queue_wait_seconds_count 3.0
# HELP tfclassify_model_version_state State.
# TYPE tfclassify_model_version_state gauge
tfclassify_model_version_state{state="AVAILABLE"} 1.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 100.0
"""
WORKER_1 = WORKER_0.replace(" 3.0", " 4.0").replace(" 2.0", " 1.0").replace(" 0.5", " 0.25").replace(" 100.0", " 200.0")


def merged_text(*texts: str) -> str:
    registry = CollectorRegistry()

    class Collector:
        def collect(self):
            return merge_metrics(enumerate(texts))

    registry.register(Collector())
    return generate_latest(registry).decode()


def test_merged_metrics_add_up_keep_what_is_alike_and_label_each_process():
    text = merged_text(WORKER_0, WORKER_1)
    assert metric_value(text, "tfclassify_requests_total", code="OK") == 7
    assert metric_value(text, "tfclassify_queue_wait_seconds_bucket", le="0.1") == 3
    assert metric_value(text, "tfclassify_queue_wait_seconds_bucket", le="+Inf") == 7
    assert metric_value(text, "tfclassify_queue_wait_seconds_sum") == 0.75
    assert metric_value(text, "tfclassify_model_version_state", state="AVAILABLE") == 1, "alike in every worker"
    assert metric_value(text, "process_resident_memory_bytes", worker="0") == 100
    assert metric_value(text, "process_resident_memory_bytes", worker="1") == 200
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:  # a new connection: any worker may answer
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


@pytest.fixture(scope="module")
def workers(model_repo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers")
    repo = folder / "repo"
    shutil.copytree(model_repo / "fashion", repo / "fashion")
    # One small TensorFlow call at a time per worker, so the drain test has requests in flight.
    proc = ServerProcess(repo, folder, "--workers", "2", "--poll-interval-s", "0.5", "--max-concurrent-batches", "1",
                         "--max-batch-size", "64")
    proc.repo = repo
    proc.worker_ports = [w["metrics_port"] for w in json.loads(proc.port_file.read_text())["workers"]]
    with proc.client() as client:
        client.wait_for_ready(60)
    yield proc
    proc.stop()


def test_both_workers_answer_on_one_port_and_the_metrics_add_up(workers):
    images = np.zeros((3, 28, 28), np.uint8)
    for _ in range(30):  # a new connection each time: the kernel spreads them over the workers
        with ClassifierClient(workers.address) as client:
            assert len(client.classify(images, "fashion").classes) == 3
    own = [metric_value(http_get(port, "/metrics")[1], "tfclassify_requests_total", method="Classify")
           for port in workers.worker_ports]
    assert all(n > 0 for n in own) and sum(own) == 30, own
    text = workers.metrics_text()
    assert metric_value(text, "tfclassify_requests_total", method="Classify", code="OK") == 30
    assert metric_value(text, "tfclassify_images_classified_total", model="fashion") == 90
    assert metric_value(text, "tfclassify_model_version_state", model="fashion", version="1", state="AVAILABLE") == 1
    assert {metric_value(text, "process_open_fds", worker=w) > 0 for w in ("0", "1")} == {True}
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = workers.log()
    assert "[worker 0] tfclassify.server.app" in log and "[worker 1] tfclassify.server.app" in log


def test_both_workers_answer_on_one_http_port(workers):
    import http.client

    body = json.dumps({"instances": np.zeros((2, 28, 28), np.uint8).tolist()})
    for _ in range(20):  # a new connection each time: the kernel spreads them over the workers
        connection = http.client.HTTPConnection("127.0.0.1", workers.http_port, timeout=30)
        connection.request("POST", "/v1/models/fashion:predict", body)
        answer = connection.getresponse()
        assert answer.status == 200 and len(json.loads(answer.read())["predictions"]) == 2
        connection.close()
    own = [metric_value(http_get(port, "/metrics")[1], "tfclassify_requests_total", api="tensorflow_serving_http",
                        method="Predict", code="OK") for port in workers.worker_ports]
    assert all(n > 0 for n in own) and sum(own) == 20, own


def test_a_new_version_is_served_by_every_worker(workers):
    tmp = workers.repo / "fashion" / ".tmp-2"
    shutil.copytree(workers.repo / "fashion" / "1", tmp)
    os.rename(tmp, workers.repo / "fashion" / "2")

    def every_worker_serves_2() -> bool:
        return all(metric_value(http_get(port, "/metrics")[1], "tfclassify_model_version_state", model="fashion",
                                version="2", state="AVAILABLE") == 1 for port in workers.worker_ports)

    wait_until(every_worker_serves_2, timeout=60, interval=0.5)
    for _ in range(10):
        with ClassifierClient(workers.address) as client:
            assert client.get_model_metadata("fashion").version == 2


def test_a_dead_worker_makes_the_server_unready_until_it_is_restarted(workers):
    [_, second] = json.loads(workers.port_file.read_text())["workers"]
    os.kill(second["pid"], signal.SIGKILL)
    wait_until(lambda: http_get(workers.metrics_port, "/readyz")[0] == 503, timeout=10, interval=0.05)
    assert "worker 1 not ready" in http_get(workers.metrics_port, "/readyz")[1], "restarting takes seconds"
    # The surviving worker reads the board every 0.5 s: then whichever worker answers says NOT_SERVING.
    wait_until(lambda: health(workers.address) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=3, interval=0.1)
    assert http_get(workers.metrics_port, "/readyz")[0] == 503, "still restarting"
    wait_until(lambda: http_get(workers.metrics_port, "/readyz")[0] == 200, timeout=90, interval=0.5)
    # Each worker reads the board every 0.5 s: within a second every one answers SERVING again.
    wait_until(lambda: {health(workers.address) for _ in range(10)} == {health_pb2.HealthCheckResponse.SERVING},
               timeout=5, interval=0.2)
    assert "worker 1 (pid" in workers.log() and "restarting it" in workers.log()
    # The restarted worker has its own metrics port now; the supervisor scrapes it.
    with ClassifierClient(workers.address) as client:
        client.classify(np.zeros((1, 28, 28), np.uint8), "fashion")


def test_sigterm_drains_every_worker_and_exits_0(workers):
    """Last: stops the workers' server."""
    drain_and_check(workers, "fashion", np.zeros((4096, 28, 28), np.uint8), grace_s=30)
    log = workers.log()
    assert log.count("tfclassify.server.app: stopped") == 2 and "tfclassify.server.workers: stopped" in log
