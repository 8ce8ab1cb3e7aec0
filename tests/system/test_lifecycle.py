"""Versions, hot reload, config file, status, queue limits, draining, replicas: real server processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, drain_and_check, metric_value, wait_until

from tfclassify.client import ClassifierClient, TfclassifyError


def add_version(model_dir: Path, source: Path, version: int) -> None:
    """Publish a version the way the trainer does: copy aside, then rename into place."""
    tmp = model_dir / f".tmp-{version}"
    shutil.copytree(source, tmp)
    os.rename(tmp, model_dir / str(version))


def add_corrupt_version(model_dir: Path, version: int) -> None:
    tmp = model_dir / f".tmp-{version}"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"\x08\x01 definitely not a SavedModel")
    os.rename(tmp, model_dir / str(version))


def one_version_repo(tmp_path: Path, version_dir: Path) -> Path:
    """``tmp_path/repo/fashion/1``, a copy of ``version_dir``; returns the model folder."""
    model_dir = tmp_path / "repo" / "fashion"
    model_dir.mkdir(parents=True)
    add_version(model_dir, version_dir, 1)
    return model_dir


class Traffic:
    """Clients classifying back to back in threads, recording every outcome."""

    def __init__(self, address: str, images: np.ndarray, threads: int = 4) -> None:
        self.outcomes: list[tuple[int, str]] = []  # (version, "" or error code)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(address, images)) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, address: str, images: np.ndarray) -> None:
        with ClassifierClient(address, timeout=30, retries=0) as client:  # every failure is seen
            while not self._stop.is_set():
                try:
                    outcome = (client.classify(images, "fashion").version, "")
                except TfclassifyError as exc:
                    outcome = (0, exc.code.name)
                with self._lock:
                    self.outcomes.append(outcome)

    def versions(self) -> set[int]:
        with self._lock:
            return {v for v, _ in self.outcomes}

    def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.outcomes


@pytest.fixture()
def fashion_v1(model_repo) -> Path:
    return model_repo / "fashion" / "1"


def test_hot_reload_under_traffic_loses_no_request(fashion_v1, tmp_path, fashion_test):
    model_dir = one_version_repo(tmp_path, fashion_v1)
    proc = ServerProcess(tmp_path / "repo", tmp_path, "--poll-interval-s", "0.3")
    traffic = Traffic(proc.address, fashion_test.images[:8])
    try:
        wait_until(lambda: len(traffic.outcomes) > 50)
        add_version(model_dir, fashion_v1, 2)  # a new version appears: it loads, warms up, takes over
        wait_until(lambda: 2 in traffic.versions())
        add_corrupt_version(model_dir, 3)  # a broken one: reported, never served
        with proc.client() as client:
            status = wait_until(lambda: [s for s in client.get_model_status("fashion") if s.version == 3 and s.state == "FAILED"])
            assert "not a loadable SavedModel" in status[0].error
            count = len(traffic.outcomes)
            wait_until(lambda: len(traffic.outcomes) > count + 50)
            states = {(s.version, s.state) for s in client.get_model_status("fashion")}
            assert states == {(2, "AVAILABLE"), (3, "FAILED")}, states
    finally:
        outcomes = traffic.stop()
        assert proc.stop() == 0, proc.log()
    errors = [code for _, code in outcomes if code]
    assert errors == [], f"{len(errors)} of {len(outcomes)} requests failed: {set(errors)}"
    versions = [v for v, _ in outcomes]
    assert versions[0] == 1 and versions[-1] == 2 and 3 not in versions
    assert versions.index(2) > 0 and 1 not in versions[versions.index(2) + 50 :], "version 1 was unloaded"
    assert "model fashion version 3 failed to load" in proc.log()


CONFIG = """
batching {{ max_batch_size: 512 }}
models {{
  name: "fashion"
  base_path: "{base}"
  version_policy {{ specific {{ versions: 1 versions: 2 }} }}
  version_labels {{ key: "stable" value: 1 }}
  version_labels {{ key: "canary" value: {canary} }}
}}
"""


def test_config_file_policies_labels_and_live_changes(fashion_v1, tmp_path):
    base = tmp_path / "models" / "fashion"
    base.mkdir(parents=True)
    for version in (1, 2, 3):
        add_version(base, fashion_v1, version)
    config = tmp_path / "models.pbtxt"
    config.write_text(CONFIG.format(base=base, canary=2))
    (tmp_path / "elsewhere").mkdir()  # --model-repo: only for relative base paths here
    proc = ServerProcess(tmp_path / "elsewhere", tmp_path, "--model-config", str(config), "--poll-interval-s", "0.3")
    image = np.zeros((1, 28, 28), np.uint8)
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
            assert client.get_model_metadata("fashion").versions == (1, 2), "specific policy: 1 and 2, not 3"
            assert client.classify(image, "fashion", version_label="stable").version == 1
            assert client.classify(image, "fashion", version_label="canary").version == 2
            assert client.classify(image, "fashion").version == 2, "no version asked: the latest served"
            labels = {s.version: s.labels for s in client.get_model_status("fashion")}
            assert labels == {1: ("stable",), 2: ("canary",)}
            with pytest.raises(TfclassifyError) as info:
                client.classify(image, "fashion", version=3)
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            # Point canary at version 3 and serve it too: applied without a restart.
            config.write_text(CONFIG.format(base=base, canary=3).replace("versions: 2 }", "versions: 2 versions: 3 }"))
            wait_until(lambda: client.get_model_metadata("fashion").versions == (1, 2, 3))
            assert client.classify(image, "fashion", version_label="canary").version == 3
            # A broken config is reported and the running one kept.
            config.write_text("models { name: ")
            time.sleep(1.0)
            assert client.classify(image, "fashion", version_label="canary").version == 3
            assert metric_value(proc.metrics_text(), "tfclassify_model_config_errors_total") >= 1
            # Batching from the file: 2,000 images run as TensorFlow calls of at most 512.
            before = metric_value(proc.metrics_text(), "tfclassify_batch_size_images_count", model="fashion", version="2")
            assert len(client.classify(np.zeros((2000, 28, 28), np.uint8), "fashion", version=2)) == 2000
            after = metric_value(proc.metrics_text(), "tfclassify_batch_size_images_count", model="fashion", version="2")
            assert after - before == 4
    finally:
        assert proc.stop() == 0, proc.log()


GATED_MODEL = """
import sys
import tensorflow as tf

out, gate = sys.argv[1], sys.argv[2]


class Gated(tf.Module):
    # Two classes from the mean brightness; a batch holding a marked image (first pixels 251, 37, 13) first waits
    # (polling the file system) until the file `gate`0 exists, which the test creates when it is ready.
    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def serve(self, images):
        marked = tf.reduce_any(tf.reduce_all(tf.equal(images[:, 0, :3], tf.constant([[251, 37, 13]], tf.uint8)), 1))
        # The name depends on the input (`gate` + "0"): a constant one could be looked up as the graph is optimised.
        pattern = tf.strings.join([gate, tf.strings.as_string(tf.size(images) * 0)])

        def wait():
            return tf.while_loop(lambda found: tf.equal(found, 0),
                                 lambda found: tf.size(tf.io.matching_files(pattern)), [tf.constant(0)])[0]

        waited = tf.cond(marked, wait, lambda: tf.constant(1))
        mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0 + 0.0 * tf.cast(waited, tf.float32)
        return {"probabilities": tf.stack([1.0 - mean, mean], axis=1)}


model = Gated()
tf.saved_model.save(model, out, signatures={"serving_default": model.serve})
"""


def test_concurrent_requests_are_batched_together(fashion_test, tmp_path):
    """640 single-image requests that arrive while the model is busy wait in its queue and run as one TensorFlow
    call. Deterministic however busy the machine: the batch ahead of them is held (the model waits for a file the
    test creates only once the server has queued all 640), and one batch runs at a time."""
    gate = tmp_path / "gate0"
    subprocess.run([sys.executable, "-c", GATED_MODEL, str(tmp_path / "repo" / "gated" / "1"), str(tmp_path / "gate")],
                   check=True, capture_output=True)
    # One batch at a time; no admission limit refuses any of the 641 requests held at once.
    proc = ServerProcess(tmp_path / "repo", tmp_path, "--max-concurrent-batches", "1", "--max-batch-size", "1024",
                         "--max-requests-in-progress", "0", "--max-requests-per-client", "0",
                         "--max-pending-calls", "4096")
    held = np.zeros((1, 28, 28), np.uint8)
    held[0, 0, :3] = (251, 37, 13)
    images = fashion_test.images[:640]

    def batches() -> tuple[float, float]:
        text = proc.metrics_text()
        return (metric_value(text, "tfclassify_batch_size_images_count", model="gated", version="1"),
                metric_value(text, "tfclassify_batch_size_images_sum", model="gated", version="1"))

    try:
        with proc.client(timeout=120) as client:
            client.wait_for_ready(60)
            count0, sum0 = batches()
            holding = client.classify_async(held, "gated")
            # Running, alone: a single request that reached the idle model before it would run at once.
            wait_until(lambda: metric_value(proc.metrics_text(), "tfclassify_batches_in_flight", model="gated") == 1)
            futures = [client.classify_async(images[i : i + 1], "gated") for i in range(640)]
            wait_until(lambda: metric_value(proc.metrics_text(), "tfclassify_queued_images", model="gated") == 640,
                       interval=0.02)
            assert not holding.done() and batches() == (count0, sum0), "the held batch has not finished"
            gate.touch()  # the held batch ends, and the queue runs
            assert holding.result().classes.tolist() == [0]
            classes = [f.result().classes[0] for f in futures]
            count, total = batches()
            assert (count - count0, total - sum0) == (2, 641), "the held batch, then the 640 requests in one"
            assert classes == client.classify(images, "gated").classes.tolist()
    finally:
        gate.touch()  # a held batch never outlives the test
        assert proc.stop() == 0, proc.log()


def test_queue_limit_and_deadlines_give_their_codes(fashion_v1, tmp_path):
    one_version_repo(tmp_path, fashion_v1)
    proc = ServerProcess(
        tmp_path / "repo", tmp_path, "--max-batch-size", "1024", "--max-enqueued-images", "4096",
        "--max-concurrent-batches", "1", "--max-images-per-request", "4096",
    )
    big = np.zeros((4096, 28, 28), np.uint8)
    try:
        with proc.client(timeout=60) as client:
            client.wait_for_ready(60)
            futures = [client.classify_async(big, "fashion") for _ in range(6)]
            codes = []
            for f in futures:
                try:
                    f.result()
                    codes.append("OK")
                except TfclassifyError as exc:
                    codes.append(exc.code.name)
            assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes, codes
            assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
            # A deadline shorter than the queue ahead of it: DEADLINE_EXCEEDED, and the server stays healthy.
            ahead = [client.classify_async(big, "fashion") for _ in range(1)]
            with pytest.raises(TfclassifyError) as info:
                client.classify(big[:1], "fashion", timeout=0.005)
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            for f in ahead:
                assert len(f.result()) == 4096
            assert len(client.classify(big[:3], "fashion")) == 3
        text = proc.metrics_text()
        assert metric_value(text, "tfclassify_requests_total", method="Classify", code="RESOURCE_EXHAUSTED") == codes.count("RESOURCE_EXHAUSTED")
    finally:
        assert proc.stop() == 0, proc.log()


def test_sigterm_drains_in_flight_requests(fashion_v1, tmp_path):
    one_version_repo(tmp_path, fashion_v1)
    # Small TensorFlow calls, one at a time: 12 requests of 4,096 images take about a second.
    proc = ServerProcess(tmp_path / "repo", tmp_path, "--max-concurrent-batches", "1", "--max-batch-size", "64")
    try:
        drain_and_check(proc, "fashion", np.zeros((4096, 28, 28), np.uint8), grace_s=30)
    finally:
        proc.stop()


def test_sigterm_drains_requests_in_flight_over_http_too(fashion_v1, tmp_path):
    one_version_repo(tmp_path, fashion_v1)
    proc = ServerProcess(tmp_path / "repo", tmp_path, "--max-concurrent-batches", "1", "--max-batch-size", "64")
    try:  # 8 requests: the HTTP client's calls in flight at once (one connection per thread)
        drain_and_check(proc, "fashion", np.zeros((4096, 28, 28), np.uint8), grace_s=30, requests=8, http=True)
    finally:
        proc.stop()


def test_replicas_on_logical_cpu_devices_share_the_load(fashion_v1, tmp_path, fashion_test):
    one_version_repo(tmp_path, fashion_v1)
    proc = ServerProcess(
        tmp_path / "repo", tmp_path, "--logical-cpu-devices", "2", "--device", "cpu:all",
        "--max-batch-size", "256", "--max-concurrent-batches", "1",
    )
    try:
        with proc.client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
            client.wait_for_ready(60)
            info = client.get_model_metadata("fashion")
            assert info.device == "/device:CPU:0,/device:CPU:1"
            reference = client.classify(fashion_test.images[:1024], "fashion", return_probabilities=True)
            results = list(pool.map(lambda i: client.classify(fashion_test.images[i * 256 : (i + 1) * 256], "fashion",
                                                              return_probabilities=True), range(4)))
            np.testing.assert_allclose(np.concatenate([r.probabilities for r in results]), reference.probabilities,
                                       rtol=1e-5, atol=1e-6)
        text = proc.metrics_text()
        for device in info.device.split(","):
            assert metric_value(text, "tfclassify_model_replica_info", model="fashion", device=device) == 1
            assert metric_value(text, "tfclassify_inference_duration_seconds_count", model="fashion", device=device) > 0, device
        assert "replica devices: " + ", ".join(info.device.split(",")) in proc.log()
    finally:
        assert proc.stop() == 0, proc.log()


def test_xla_compiled_small_batches_match_the_plain_path(fashion_v1, tmp_path, fashion_test, client):
    one_version_repo(tmp_path, fashion_v1)
    proc = ServerProcess(tmp_path / "repo", tmp_path, "--xla-max-batch-size", "8")
    try:
        with proc.client() as xla_client:
            xla_client.wait_for_ready(60)
            for n in (1, 3, 8, 20):  # padded to 1, 4, 8; 20 takes the plain path
                images = fashion_test.images[:n]
                plain = client.classify(images, "fashion", return_probabilities=True)
                compiled = xla_client.classify(images, "fashion", return_probabilities=True)
                assert np.array_equal(compiled.classes, plain.classes)
                np.testing.assert_allclose(compiled.probabilities, plain.probabilities, atol=1e-5)
        assert "XLA batch sizes [1, 2, 4, 8]" in proc.log()
    finally:
        assert proc.stop() == 0, proc.log()


def test_a_golden_set_gates_availability(fashion_v1, tmp_path, fashion_test, client):
    images = fashion_test.images[:32]
    predicted = client.classify(images, "fashion").classes
    model_dir = one_version_repo(tmp_path, fashion_v1)
    np.savez(model_dir / "1" / "golden.npz", images=images, labels=predicted)
    add_version(model_dir, fashion_v1, 2)
    wrong = predicted.copy()
    wrong[:4] = (wrong[:4] + 1) % 10
    np.savez(model_dir / "2" / "golden.npz", images=images, labels=wrong)
    proc = ServerProcess(tmp_path / "repo", tmp_path)
    try:
        with proc.client() as golden_client:
            golden_client.wait_for_ready(60)
            states = {s.version: (s.state, s.error) for s in golden_client.get_model_status("fashion")}
            assert states[1] == ("AVAILABLE", "")
            assert states[2][0] == "FAILED"
            assert "classifies 28 of 32 golden images correctly; at least 100% are required" in states[2][1]
            assert golden_client.classify(images[:2], "fashion").version == 1
    finally:
        assert proc.stop() == 0, proc.log()
