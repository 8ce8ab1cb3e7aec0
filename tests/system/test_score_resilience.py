"""Scoring survives what happens to real runs: SIGKILL and Ctrl-C with --resume, shards and merge,
a server killed mid-run, and a server that refuses one image."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from archives import encode, image_members, read_jsonl, write_tree, write_zip
from conftest import FASHION_LABELS, ServerProcess, metric_value, tfclassify_cmd

from tfclassify.common.tensors import from_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

#: Small batches, one at a time, decoded on threads: slow enough to be stopped mid-run.
#: One small request at a time: 625 round trips for the 10,000 images, so a run stopped after its first rows is
#: stopped early on any machine (at 32 images a request, a fast machine finished before the signal landed).
SLOW = ("--batch-size", "16", "--in-flight", "1", "--decode-workers", "0")


@pytest.fixture(scope="module")
def big_zip(tmp_path_factory, fashion_test):
    members = image_members(fashion_test.images, fashion_test.labels, FASHION_LABELS)
    return write_zip(tmp_path_factory.mktemp("big") / "fashion10k.zip", members)


@pytest.fixture(scope="module")
def uninterrupted(server, big_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "whole.jsonl"
    run_score(server.address, big_zip, out, *SLOW)
    return out


def run_score(address, archive, out, *extra, expect=0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        tfclassify_cmd("score", "--server", address, "--model", "fashion", "--images", str(archive), "--labels",
                       "folder", "--output", str(out), "--no-progress", *extra),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == expect, result.stderr
    return result


def start_score(address, archive, out, *extra, sigint_ignored: bool = False) -> subprocess.Popen:
    """``tfclassify score`` in the background; ``sigint_ignored``: started as a script's ``cmd &`` starts it, with
    SIGINT ignored (Python then installs no KeyboardInterrupt handler of its own)."""
    return subprocess.Popen(
        tfclassify_cmd("score", "--server", address, "--model", "fashion", "--images", str(archive), "--labels",
                       "folder", "--output", str(out), "--no-progress", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )


def wait_for_rows(path, rows: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= rows:
            return
        assert proc.poll() is None, f"the run ended before {rows} rows: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError(f"no {rows} rows in {path} after {timeout} s")


def test_sigkill_then_resume_gives_the_uninterrupted_output(server, big_zip, uninterrupted, tmp_path):
    out = tmp_path / "killed.jsonl"
    proc = start_score(server.address, big_zip, out, *SLOW)
    wait_for_rows(out, 64, proc)
    proc.kill()
    proc.wait()
    written = out.read_bytes()
    assert 64 <= written.count(b"\n") < 10000, "killed mid-run"
    result = run_score(server.address, big_zip, out, *SLOW, "--resume")
    assert "in this run" in result.stdout
    assert out.read_bytes() == uninterrupted.read_bytes(), "same rows, same order, same bytes"
    assert json.loads((tmp_path / "killed.jsonl.run.json").read_text())["complete"] is True


@pytest.mark.parametrize("stop, sigint_ignored", [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "sigint-started-in-background", "sigterm"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_says_how_to_resume(server, big_zip, uninterrupted, tmp_path, stop,
                                                                 sigint_ignored):
    out = tmp_path / "stopped.jsonl"
    proc = start_score(server.address, big_zip, out, *SLOW, sigint_ignored=sigint_ignored)
    wait_for_rows(out, 64, proc)
    proc.send_signal(stop)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    done = out.read_bytes()
    assert done.endswith(b"\n"), "only whole rows"
    count = done.count(b"\n")
    assert f"tfclassify: interrupted after {count:,} of 10,000 images; the output holds them; continue with:" in stderr
    assert "--resume" in stderr.splitlines()[-1]
    assert uninterrupted.read_bytes().startswith(done)
    run_score(server.address, big_zip, out, *SLOW, "--resume")
    assert out.read_bytes() == uninterrupted.read_bytes()


def test_sharded_outputs_merge_into_the_single_run(server, fashion_test, tmp_path):
    archive = write_zip(tmp_path / "f.zip", image_members(fashion_test.images[:500], fashion_test.labels[:500],
                                                          FASHION_LABELS))
    run_score(server.address, archive, tmp_path / "single.jsonl")
    shards = [tmp_path / "s0.jsonl", tmp_path / "s1.parquet", tmp_path / "s2.jsonl"]
    for i, out in enumerate(shards):
        run_score(server.address, archive, out, "--shard", f"{i}/3")
    sizes = [len(read_jsonl(p)) for p in shards if p.suffix == ".jsonl"]
    assert all(100 < n < 250 for n in sizes), "each shard holds about a third"

    def merge(*outputs, expect=0, to="merged.jsonl", args=()):
        result = subprocess.run(tfclassify_cmd("merge", *map(str, outputs), "--output", str(tmp_path / to), *args),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == expect, result.stderr
        return result

    result = merge(*shards[::-1], args=("--report", str(tmp_path / "merged.html")))
    assert (tmp_path / "merged.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()
    assert "merged 3 shards into" in result.stdout and "accuracy" in result.stdout
    html = (tmp_path / "merged.html").read_text()  # its thumbnails read back from the shards' archive
    assert 'id="misclassified"' in html and "<figure" in html and 'class="missing"' not in html
    assert '<p class="note">' not in html
    missing = merge(shards[0], shards[2], expect=1, to="m2.jsonl")
    assert "missing shard 1/3 (" in missing.stderr and not (tmp_path / "m2.jsonl").exists()
    twice = merge(shards[0], shards[0], shards[2], expect=1, to="m3.jsonl")
    assert f"shard 0/3 is given twice: {shards[0]} and {shards[0]}" in twice.stderr
    other = write_zip(tmp_path / "other.zip", image_members(fashion_test.images[500:600],
                                                            fashion_test.labels[500:600], FASHION_LABELS))
    run_score(server.address, other, tmp_path / "o1.jsonl", "--shard", "1/3")
    foreign = merge(shards[0], tmp_path / "o1.jsonl", shards[2], expect=1, to="m4.jsonl")
    assert "not shards of one job" in foreign.stderr


def test_a_server_killed_mid_run_is_routed_around(server, model_repo, big_zip, uninterrupted, tmp_path):
    second = ServerProcess(model_repo, tmp_path, "--max-images-per-request", "4096")
    try:
        with second.client() as client:
            client.wait_for_ready(60)
        # One gRPC target naming both servers: round_robin spreads the batches over them.
        before = [metric_value(p.metrics_text(), "tfclassify_images_classified_total", model="fashion")
                  for p in (server, second)]
        both = f"ipv4:{server.address},{second.address}"
        run_score(both, big_zip, tmp_path / "rr.jsonl", "--limit", "2048", "--batch-size", "128")
        after = [metric_value(p.metrics_text(), "tfclassify_images_classified_total", model="fashion")
                 for p in (server, second)]
        assert all(b > a for a, b in zip(before, after)), (before, after)
        assert sum(after) - sum(before) == 2048
        out = tmp_path / "two.jsonl"
        proc = start_score(server.address, big_zip, out, "--server", second.address, "--batch-size", "64",
                           "--in-flight", "4", "--decode-workers", "0")
        wait_for_rows(out, 2000, proc)
        served = metric_value(second.metrics_text(), "tfclassify_images_classified_total", model="fashion")
        second.proc.kill()
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        second.stop()
    assert proc.returncode == 0, stderr
    assert served > 0, "both servers took work before one died"
    rows, expected = read_jsonl(out), read_jsonl(uninterrupted)
    assert [r["index"] for r in rows] == list(range(10000)), "every image exactly once"
    assert [r["class"] for r in rows] == [r["class"] for r in expected]


class RefusingClassifier(pb_grpc.ClassifierServicer):
    """A real gRPC Classifier that refuses any batch holding a blank (all-white) image, as a server may refuse
    an image it cannot take; other images get class 1 if their mean pixel is above 60, else 0."""

    def GetModelMetadata(self, request, context):  # noqa: N802 - the protocol's method name
        return pb.ModelMetadata(model_spec=pb.ModelSpec(name="picky", version=1), versions=[1], input_shape=[28, 28],
                                input_dtype=pb.UINT8, labels=["dim", "bright"], output_kind="probabilities")

    def Classify(self, request, context):  # noqa: N802 - the protocol's method name
        images = from_tensor_proto(request.tensor)
        blank = np.flatnonzero((images.reshape(len(images), -1) == 255).all(axis=1))
        if len(blank):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"image {blank[0]} is blank: nothing to classify")
        classes = (images.reshape(len(images), -1).mean(axis=1) > 60).astype(int)
        return pb.ClassifyResponse(model_spec=pb.ModelSpec(name="picky", version=1), classes=classes.tolist(),
                                   scores=[1.0] * len(images))


def test_an_image_the_server_refuses_is_skipped_and_the_rest_scored(fashion_test, tmp_path):
    grpc_server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_ClassifierServicer_to_server(RefusingClassifier(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        pictures = [fashion_test.images[i] for i in range(7)]
        pictures[4] = np.full((28, 28), 255, np.uint8)
        tree = write_tree(tmp_path / "pics", [(f"{i}.png", encode(p)) for i, p in enumerate(pictures)])
        result = subprocess.run(
            tfclassify_cmd("score", "--server", f"127.0.0.1:{port}", "--model", "picky", "--images", str(tree),
                           "--invert", "no", "--output", str(tmp_path / "o.jsonl"), "--no-progress"),
            capture_output=True, text=True, timeout=120,
        )
    finally:
        grpc_server.stop(0)
    assert result.returncode == 3, result.stderr
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert [r.get("skipped") for r in rows] == [None] * 4 + ["refused by the server: image 0 is blank: nothing to "
                                                             "classify"] + [None] * 2
    means = [p.mean() > 60 for p in pictures]
    assert [r["class"] for r in rows if "class" in r] == [int(m) for i, m in enumerate(means) if i != 4]
