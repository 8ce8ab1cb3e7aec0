"""Faults: callers that go away free their place in the queue at once (and their images are never computed),
a model that fails on some inputs fails only the requests holding them, and a server killed with SIGKILL and
restarted under a running scoring job leaves every image scored exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from archives import image_members, write_zip
from conftest import FASHION_LABELS, ROOT, ServerProcess, metric_value, tfclassify_cmd, wait_until
from tfclassify.client import TfclassifyError
from tfclassify.client.aio import ClassifierClient as AsyncClient

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
        stdout, stderr = job.communicate(timeout=300)
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
