"""Faults: callers that go away free their place in the queue at once (and their images are never computed),
a model that fails on some inputs fails only the requests holding them, and a server killed with SIGKILL and
restarted under a running scoring job leaves every image scored exactly once."""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from archives import image_members, write_zip
from conftest import FASHION_LABELS, ROOT, ServerProcess, metric_value, tfclassify_cmd, wait_until
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfclassify.client import TfclassifyError
from tfclassify.client.aio import ClassifierClient as AsyncClient
from tfclassify.client.requests import classify_request
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

SLOW = "slow"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faulty")
    subprocess.run([sys.executable, str(ROOT / "tests" / "make_faulty_model.py"), str(folder / "repo" / SLOW / "1")],
                   check=True, capture_output=True)
    # Small batches, one at a time: a full queue takes seconds to work through.
    proc = ServerProcess(folder / "repo", folder, "--max-batch-size", "16", "--max-concurrent-batches", "1",
                         "--max-enqueued-images", "4096", "--warmup-batch-sizes", "1,16")
    with proc.client() as client:
        client.wait_for_ready(120)
    yield proc
    assert proc.stop() == 0


def classified(proc: ServerProcess) -> float:
    return metric_value(proc.metrics_text(), "tfclassify_images_classified_total", model=SLOW)


def queued(proc: ServerProcess) -> float:
    return metric_value(proc.metrics_text(), "tfclassify_queued_images", model=SLOW)


@pytest.mark.parametrize("how", ["deadline", "disconnect"])
def test_callers_that_go_away_free_their_queue_at_once(faulty, how):
    images = np.zeros((1024, 28, 28), np.uint8)

    async def fill_then_go_away() -> list[str]:
        client = AsyncClient(faulty.address, retries=0)
        calls = [asyncio.ensure_future(client.classify(images, SLOW, timeout=0.5 if how == "deadline" else 60))
                 for _ in range(4)]  # 4,096 images: the whole queue
        if how == "disconnect":
            await asyncio.sleep(0.5)
            await client.close()  # the connection goes away with the calls in flight
        codes = []
        for call in calls:
            try:
                await call
                codes.append("OK")
            except TfclassifyError as exc:
                codes.append(exc.code.name)
            except asyncio.CancelledError:
                codes.append("CANCELLED")
        await client.close()
        return codes

    before = classified(faulty)
    codes = asyncio.run(fill_then_go_away())
    assert "OK" not in codes, codes
    wait_until(lambda: queued(faulty) == 0, timeout=2, interval=0.05)
    # The slots are free: a request as large as the whole queue is admitted (not RESOURCE_EXHAUSTED).
    with faulty.client() as client:
        assert len(client.classify(np.zeros((4096, 28, 28), np.uint8), SLOW, timeout=120).classes) == 4096
    abandoned_computed = classified(faulty) - before - 4096
    assert abandoned_computed < 1024, f"{abandoned_computed:.0f} of the 4,096 abandoned images were computed"


def test_a_model_that_fails_on_some_requests_fails_only_those(faulty):
    good = np.full((8, 28, 28), 200, np.uint8)
    poisoned = good.copy()
    poisoned[3, 0, :3] = (13, 37, 251)  # what makes the model fail

    async def mixed() -> list[str]:
        async with AsyncClient(faulty.address, retries=0) as client:
            async def one(batch):
                try:
                    result = await client.classify(batch, SLOW, timeout=60)
                    assert result.classes.tolist() == [1] * 8
                    return "OK"
                except TfclassifyError as exc:
                    assert "the model failed on this request of 8 images" in exc.details, exc.details
                    return exc.code.name
            # Sent together, so they share batches with the poisoned ones.
            return await asyncio.gather(*(one(poisoned if i % 4 == 1 else good) for i in range(16)))

    codes = asyncio.run(mixed())
    assert codes == ["INTERNAL" if i % 4 == 1 else "OK" for i in range(16)]
    with faulty.client() as client:
        assert client.classify(good, SLOW, timeout=60).classes.tolist() == [1] * 8, "and it goes on serving"
    log = faulty.log()
    assert "a poisoned image" in log and "Task exception was never retrieved" not in log


def test_a_server_killed_and_restarted_under_a_scoring_job_leaves_every_image_scored_once(
        model_repo, fashion_test, tmp_path):
    archive = write_zip(tmp_path / "3k.zip", image_members(fashion_test.images[:3000], fashion_test.labels[:3000],
                                                            FASHION_LABELS))
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "fashion", repo / "fashion")
    first = ServerProcess(repo, tmp_path)
    with first.client() as client:
        client.wait_for_ready(60)
    out = tmp_path / "scores.jsonl"
    job = subprocess.Popen(
        tfclassify_cmd("score", "--server", first.address, "--model", "fashion", "--images", str(archive),
                       "--labels", "folder", "--output", str(out), "--no-progress", "--batch-size", "32",
                       "--in-flight", "2", "--decode-workers", "0", "--max-retries", "30"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 500, timeout=120, interval=0.01)
        first.proc.kill()  # SIGKILL: no drain, batches in flight are lost on the server
        first.proc.wait()
        killed_at = out.read_bytes().count(b"\n")
        time.sleep(1)  # the job retries against a dead port meanwhile
        (tmp_path / "again").mkdir()
        second = ServerProcess(repo, tmp_path / "again", "--grpc-port", str(first.grpc_port))  # the same address
        _stdout, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        if second is not None:
            assert second.stop() == 0
        first.stop()
    assert job.returncode == 0, stderr
    assert killed_at < 3000, "the server died mid-run"
    indexes = [json.loads(line)["index"] for line in out.read_text().splitlines()]
    assert sorted(indexes) == list(range(3000)) and len(indexes) == 3000, "every image exactly once"


async def short_deadlines_and_departures(address: str) -> collections.Counter:
    """Requests whose deadline passes in the slow model's queue, through every image method and both streams,
    and callers that cancel or close their connection; returns the outcomes the callers saw."""
    images = np.zeros((64, 28, 28), np.uint8)

    def classify() -> pb.ClassifyRequest:
        return classify_request(images[:16], SLOW, None, None, 1, False, False)

    def predict() -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = SLOW
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        return request

    def infer(n: int = 16) -> oip.ModelInferRequest:
        request = oip.ModelInferRequest(model_name=SLOW)
        request.inputs.add(name="images", datatype="UINT8", shape=[n, 28, 28])
        request.raw_input_contents.append(images[:n].tobytes())
        return request

    async def outcome(call) -> str:
        try:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        except asyncio.CancelledError:
            return "CANCELLED"

    async def cancelled_after(call, seconds: float) -> str:
        await asyncio.sleep(seconds)
        call.cancel()
        return await outcome(call)

    async def requests(make, n):
        for _ in range(n):
            yield make()

    outcomes: collections.Counter = collections.Counter()
    async with grpc.aio.insecure_channel(address) as channel, grpc.aio.insecure_channel(address) as doomed:
        ours, tfs = pb_grpc.ClassifierStub(channel), prediction_service_pb2_grpc.PredictionServiceStub(channel)
        triton = oip_grpc.GRPCInferenceServiceStub(channel)
        calls = []
        for _ in range(4):
            calls.append(outcome(ours.ClassifyStream(requests(classify, 8), timeout=0.3)))
            calls.append(outcome(triton.ModelStreamInfer(requests(infer, 8), timeout=0.3)))
        for _ in range(6):
            calls.append(outcome(ours.Classify(classify(), timeout=0.2)))
            calls.append(outcome(tfs.Predict(predict(), timeout=0.2)))
            calls.append(outcome(triton.ModelInfer(infer(64), timeout=0.2)))
        for i in range(6):
            calls.append(cancelled_after(ours.Classify(classify()), 0.02 * i))
            calls.append(cancelled_after(ours.ClassifyStream(requests(classify, 8)), 0.02 * i))
            calls.append(cancelled_after(triton.ModelStreamInfer(requests(infer, 8)), 0.02 * i))
        leaving = [asyncio.ensure_future(outcome(pb_grpc.ClassifierStub(doomed).Classify(classify())))
                   for _ in range(4)]
        await asyncio.sleep(0.1)
        await doomed.close()  # a client whose connection goes away with its calls in flight
        for result in await asyncio.gather(*calls, *leaving):
            outcomes[result] += 1
    return outcomes


def test_deadlines_cancellations_and_departures_are_counted_not_logged_as_errors(faulty):
    start = len(faulty.log())
    before = faulty.metrics_text()
    outcomes = asyncio.run(short_deadlines_and_departures(faulty.address))
    assert outcomes["DEADLINE_EXCEEDED"] >= 20 and outcomes["CANCELLED"] >= 18, outcomes
    wait_until(lambda: queued(faulty) == 0, timeout=30, interval=0.05)
    with faulty.client() as client:  # still serving; and a few allocations to let the garbage collector run
        for _ in range(20):
            assert len(client.classify(np.zeros((1, 28, 28), np.uint8), SLOW).classes) == 1
    log = faulty.log()[start:]
    noisy = [line for line in log.splitlines() if " ERROR " in line or " WARNING " in line or "Traceback" in line
             or "never retrieved" in line or "destroyed" in line]
    assert noisy == [], "\n".join(noisy[:20])
    after = faulty.metrics_text()

    def counted(code: str) -> float:
        return (metric_value(after, "tfclassify_requests_total", model=SLOW, code=code)
                - metric_value(before, "tfclassify_requests_total", model=SLOW, code=code))

    # The calls the server took are in the metrics with their status (a stream's messages each count).
    assert counted("DEADLINE_EXCEEDED") >= 20 and counted("CANCELLED") >= 18, outcomes
    for method in ("ClassifyStream", "ModelStreamInfer"):
        assert metric_value(after, "tfclassify_requests_total", method=method, code="DEADLINE_EXCEEDED") > 0, method
