"""What operators see: health, reflection, Prometheus metrics, broken versions, SIGTERM."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, metric_value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tfclassify.client import TfclassifyError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_reports_the_server_the_service_and_each_model(server):
    for service in ("", "tfclassify.v1.Classifier", "fashion", "digits", "liveness"):
        assert health(server.address, service) == SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        health(server.address, "no-such-model")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"tfclassify.v1.Classifier", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_metrics_count_known_traffic_exactly(server, client, fashion_test):
    before = server.metrics_text()
    for n in (7, 7, 7):
        client.classify(fashion_test.images[:n], "fashion")
    with pytest.raises(TfclassifyError):  # NOT_FOUND, counted below
        client.classify(fashion_test.images[:1], "fashion", version=99)
    after = server.metrics_text()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("tfclassify_requests_total", method="Classify", model="fashion", version="1", code="OK") == 3
    assert delta("tfclassify_requests_total", method="Classify", model="fashion", code="NOT_FOUND") == 1
    assert delta("tfclassify_images_classified_total", model="fashion", version="1") == 21
    assert delta("tfclassify_batch_size_images_count", model="fashion", version="1") == 3
    assert delta("tfclassify_request_duration_seconds_count", api="tfclassify", method="Classify", model="fashion") == 4
    assert metric_value(after, "tfclassify_model_version_state", model="fashion", version="1", state="AVAILABLE") == 1
    assert metric_value(after, "tfclassify_model_version_state", model="fashion", version="1", state="LOADING") == 0


def test_metrics_pass_promtool(server):
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the Debian package prometheus (scripts/setup.sh installs it)"
    result = subprocess.run([promtool, "check", "metrics"], input=server.metrics_text(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_corrupt_newer_version_never_replaces_a_working_one(model_repo, tmp_path, fashion_test):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "fashion", repo / "fashion")
    broken = repo / "fashion" / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    (repo / "fashion" / ".tmp-3-abcd").mkdir()  # an export in progress: ignored
    proc = ServerProcess(repo, tmp_path)
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
            result = client.classify(fashion_test.images[:5], "fashion")
            assert result.version == 1
            assert client.get_model_metadata("fashion").versions == (1,)
        text = proc.metrics_text()
        assert metric_value(text, "tfclassify_model_version_state", model="fashion", version="2", state="FAILED") == 1
        assert metric_value(text, "tfclassify_model_load_failures_total", model="fashion") == 1
        assert "model fashion version 2 failed to load" in proc.log()
    finally:
        assert proc.stop() == 0


def test_a_model_without_a_loadable_version_keeps_the_server_not_ready(model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "fashion", repo / "fashion")
    (repo / "junk" / "1").mkdir(parents=True)
    (repo / "junk" / "1" / "saved_model.pb").write_bytes(b"\x00\x01garbage")
    proc = ServerProcess(repo, tmp_path)
    try:
        assert health(proc.address, "") == NOT_SERVING
        assert health(proc.address, "junk") == NOT_SERVING
        assert health(proc.address, "fashion") == SERVING
        with proc.client() as client:
            assert len(client.classify(np.zeros((2, 28, 28), np.uint8), "fashion")) == 2
            with pytest.raises(Exception) as info:
                client.classify(np.zeros((2, 28, 28), np.uint8), "junk")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        assert proc.stop() == 0


def test_sigterm_stops_cleanly_with_status_0(model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "digits", repo / "digits")
    proc = ServerProcess(repo, tmp_path)
    with proc.client() as client:
        client.wait_for_ready(60)
    assert proc.stop() == 0
    assert "shutting down" in proc.log() and "stopped" in proc.log()
