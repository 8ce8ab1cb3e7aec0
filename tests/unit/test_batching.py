"""The dynamic batcher's rules, on a fake model (numpy, a sleep for compute time)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from test_event_loop import on_measured_loop

from tfclassify.server.core.batching import Batcher, BatchingOptions, BatchObserver, Replica
from tfclassify.server.core.errors import DeadlineExceededError, ModelUnavailableError, QueueFullError
from tfclassify.server.core.event_loop import MeasuredEventLoop
from tfclassify.server.core.metrics import ServerMetrics


class FakeModel:
    """'Probabilities' that identify each image (its first pixel), computed slowly; records every batch."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.started: list[float] = []

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.started.append(time.monotonic())
        self.batches.append(images[:, 0, 0].tolist())
        time.sleep(self.seconds)
        return {"scores": images[:, 0, :2].astype(np.float32), "ids": images[:, 0, 0].astype(np.int64)}


def images(*ids: int) -> np.ndarray:
    batch = np.zeros((len(ids), 28, 28), np.uint8)
    batch[:, 0, 0] = ids
    return batch


def make(model: FakeModel, replicas: int = 1, **options) -> tuple[Batcher, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    observer = BatchObserver(on_batch=lambda replica, size, seconds: seen.append((replica.device, size)))
    opts = BatchingOptions(**{"max_batch_size": 8, "max_enqueued_images": 64, "max_concurrent_batches": 1,
                              "batch_timeout_s": 0.002, **options})
    executor = ThreadPoolExecutor(4)
    reps = [Replica(f"dev{i}", model) for i in range(replicas)]
    return Batcher("m:1", reps, opts, executor, observer), seen


def run(coro):
    return asyncio.run(coro)


def test_an_idle_model_runs_a_request_at_once_and_the_queue_fills_the_next_batch():
    async def scenario():
        model = FakeModel(0.05)
        batcher, _ = make(model)
        first = asyncio.create_task(batcher.run(images(1)))
        await asyncio.sleep(0.01)  # the first batch is running now
        rest = [asyncio.create_task(batcher.run(images(i))) for i in range(2, 8)]
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return model.batches, results

    batches, results = run(scenario())
    assert batches == [[1], [2, 3, 4, 5, 6, 7]]
    assert [r["scores"][0, 0] for r in results] == [1, 2, 3, 4, 5, 6, 7], "each caller gets its own rows back"
    assert [r["ids"].tolist() for r in results] == [[1], [2], [3], [4], [5], [6], [7]], "of every output"


def test_large_requests_are_split_to_max_batch_size_and_reassembled_in_order():
    async def scenario():
        model = FakeModel(0.001)
        batcher, _ = make(model, max_batch_size=4)
        result = await batcher.run(images(*range(10)))
        await batcher.close()
        return model.batches, result

    batches, result = run(scenario())
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert result["scores"][:, 0].tolist() == list(range(10))
    assert result["ids"].tolist() == list(range(10))


def test_a_full_queue_refuses_at_once():
    async def scenario():
        batcher, _ = make(FakeModel(0.05), max_batch_size=8, max_enqueued_images=8)
        running = asyncio.create_task(batcher.run(images(*range(8))))
        await asyncio.sleep(0.01)  # dispatched: the queue is empty again
        queued = asyncio.create_task(batcher.run(images(*range(8))))
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="8 images are queued and 1 more would pass the limit of 8"):
            await batcher.run(images(99))
        refused_after = time.monotonic() - started
        await asyncio.gather(running, queued)
        await batcher.close()
        return refused_after

    assert run(scenario()) < 0.005


def test_an_expired_request_is_dropped_without_running():
    async def scenario():
        model = FakeModel(0.05)
        batcher, _ = make(model)
        running = asyncio.create_task(batcher.run(images(1)))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.run(images(2), deadline=time.monotonic() + 0.01))
        ok = asyncio.create_task(batcher.run(images(3), deadline=time.monotonic() + 5))
        with pytest.raises(DeadlineExceededError, match="deadline passed"):
            await late
        await asyncio.gather(running, ok)
        await batcher.close()
        return model.batches

    assert run(scenario()) == [[1], [3]]


def test_a_cancelled_caller_is_skipped_and_breaks_nothing():
    async def scenario():
        model = FakeModel(0.05)
        batcher, _ = make(model)
        running = asyncio.create_task(batcher.run(images(1)))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.run(images(2)))
        stays = asyncio.create_task(batcher.run(images(3)))
        await asyncio.sleep(0)
        gone.cancel()
        results = await asyncio.gather(running, stays)
        # Cancel one caller while its batch is running, too: the result must simply be dropped.
        a = asyncio.create_task(batcher.run(images(4)))
        b = asyncio.create_task(batcher.run(images(5)))
        await asyncio.sleep(0.01)
        a.cancel()
        assert (await b)["scores"][0, 0] == 5
        await batcher.close()
        return model.batches, results, gone.cancelled()

    batches, results, cancelled = run(scenario())
    assert cancelled and batches[:2] == [[1], [3]] and [r["scores"][0, 0] for r in results] == [1, 3]


def test_a_partial_batch_waits_at_most_the_batch_timeout_while_busy():
    async def scenario():
        model = FakeModel(0.2)
        batcher, _ = make(model, max_concurrent_batches=2, batch_timeout_s=0.03)
        slow = asyncio.create_task(batcher.run(images(1)))
        await asyncio.sleep(0.01)
        enqueued = time.monotonic()
        await batcher.run(images(2))  # a slot is free, but a batch is running: wait for company, briefly
        await slow
        await batcher.close()
        return model.started[1] - enqueued

    waited = run(scenario())
    assert 0.03 <= waited < 0.1, f"started after {waited:.3f} s, not when the running batch ended (0.19 s)"


async def share_a_batch(batcher: Batcher, model: FakeModel, apart_s: float) -> list[list[int]]:
    """Give ``batcher`` a last batch of two requests that came ``apart_s`` apart (while a slow batch ran, on a
    model that takes ``apart_s`` + 0.1 s), then leave it idle on ``model``; returns the two batches run."""
    slow = FakeModel(apart_s + 0.1)
    batcher.replicas[0].run = slow
    first = asyncio.create_task(batcher.run(images(1)))
    await asyncio.sleep(0.01)
    shared = [asyncio.create_task(batcher.run(images(2)))]
    await asyncio.sleep(apart_s)
    shared.append(asyncio.create_task(batcher.run(images(3))))
    await asyncio.gather(first, *shared)
    batcher.replicas[0].run = model
    return slow.batches


def test_a_lone_caller_never_waits_for_company():
    async def scenario():
        model = FakeModel(0.0)
        batcher, _ = make(model, batch_timeout_s=0.5)
        waits = []
        for i in range(5):  # one caller: each request alone in its batch, each started at once
            enqueued = time.monotonic()
            await batcher.run(images(i))
            waits.append(model.started[-1] - enqueued)
        await batcher.close()
        return waits, model.batches

    waits, batches = run(scenario())
    assert batches == [[0], [1], [2], [3], [4]]
    assert max(waits) < 0.05, f"a lone caller's request waited {max(waits):.3f} s (the batch timeout is 0.5 s)"


def test_an_idle_model_waits_for_company_while_several_callers_keep_sending():
    async def scenario():
        model = FakeModel(0.0)
        batcher, _ = make(model, batch_timeout_s=0.5)
        shared = await share_a_batch(batcher, model, 0.02)  # two callers sent 20 ms apart
        # Idle now, its last batch shared: requests 20 ms apart keep it waiting (up to 3 x 20 ms after each) ...
        calls = []
        for i in (4, 5, 6):
            calls.append(asyncio.create_task(batcher.run(images(i))))
            await asyncio.sleep(0.02)
        await asyncio.gather(*calls)
        # ... and once a batch has ended as its requests stopped coming (3 callers), 3 requests go at once.
        calls = []
        for i in (7, 8, 9):
            calls.append(asyncio.create_task(batcher.run(images(i))))
            await asyncio.sleep(0.005)
        third = time.monotonic() - 0.005
        await asyncio.gather(*calls)
        await batcher.close()
        return shared + model.batches, model.started[-1] - third

    batches, waited = run(scenario())
    assert batches == [[1], [2, 3], [4, 5, 6], [7, 8, 9]]
    assert waited < 0.04, f"the third request waited {waited:.3f} s for a company of 3 that had come"


def test_company_is_awaited_at_most_the_batch_timeout():
    async def scenario():
        model = FakeModel(0.0)
        batcher, _ = make(model, batch_timeout_s=0.06, max_batch_size=64, max_enqueued_images=64)
        await share_a_batch(batcher, model, 0.3)  # two callers sent 0.3 s apart ...
        # ... so requests less than 0.9 s apart keep coming, 5 ms apart:
        calls, started = [], time.monotonic()
        for i in range(4, 30):
            calls.append(asyncio.create_task(batcher.run(images(i))))
            await asyncio.sleep(0.005)
        await asyncio.gather(*calls)
        await batcher.close()
        return model.started[0] - started, model.batches

    waited, batches = run(scenario())
    assert 0.06 <= waited < 0.12, f"the first batch started after {waited:.3f} s, not at the 0.06 s batch timeout"
    assert len(batches[0]) < 26, "it did not wait for every request"


def test_a_request_whose_deadline_is_nearer_than_the_batch_timeout_never_waits_for_company():
    async def scenario():
        model = FakeModel(0.0)
        batcher, _ = make(model, batch_timeout_s=0.5)
        shared = await share_a_batch(batcher, model, 0.02)
        calls = []  # as in the test above, but each due within 0.3 s: waiting 0.5 s for company would miss it
        for i in (4, 5, 6):
            calls.append(asyncio.create_task(batcher.run(images(i), deadline=time.monotonic() + 0.3)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*calls)
        await batcher.close()
        return shared + model.batches

    assert run(scenario()) == [[1], [2, 3], [4], [5], [6]]


def test_below_saturation_an_idle_version_runs_requests_at_once_even_after_a_shared_batch():
    async def scenario(loop: MeasuredEventLoop):
        model = FakeModel(0.0)
        batcher, _ = make(model, batch_timeout_s=0.5)
        shared = await share_a_batch(batcher, model, 0.02)
        calls = []  # the loop sleeps in its selector between these: not saturated, so no waiting for company
        for i in (4, 5, 6):
            calls.append(asyncio.create_task(batcher.run(images(i))))
            await asyncio.sleep(0.02)
        await asyncio.gather(*calls)
        await batcher.close()
        return shared + model.batches

    assert on_measured_loop(scenario) == [[1], [2, 3], [4], [5], [6]]


def test_close_drains_the_queue_then_refuses():
    async def scenario():
        model = FakeModel(0.02)
        batcher, _ = make(model)
        pending = [asyncio.create_task(batcher.run(images(i))) for i in range(1, 5)]
        await asyncio.sleep(0)
        await batcher.close()
        assert all(t.done() and not t.exception() for t in pending)
        with pytest.raises(ModelUnavailableError, match="unloading"):
            await batcher.run(images(9))

    run(scenario())


def test_batches_go_to_the_least_busy_replica():
    async def scenario():
        model = FakeModel(0.05)
        batcher, seen = make(model, replicas=2, max_batch_size=2)
        await asyncio.gather(*(batcher.run(images(i, i)) for i in range(6)))
        await batcher.close()
        return seen

    seen = run(scenario())
    devices = [d for d, _ in seen]
    assert devices.count("dev0") >= 2 and devices.count("dev1") >= 2, devices


def test_a_caller_that_goes_away_frees_its_queue_slots_at_once():
    async def scenario():
        model = FakeModel(0.2)
        batcher, _ = make(model, max_batch_size=8, max_enqueued_images=16)
        registry = CollectorRegistry()  # the version's gauge, as /metrics shows it
        ServerMetrics(registry).for_version("m", 1, ["a", "b"], ["dev0"]).watch(batcher)
        labels = {"model": "m", "version": "1"}
        running = asyncio.create_task(batcher.run(images(*range(8))))
        await asyncio.sleep(0.01)  # running: the queue is empty
        gone = asyncio.create_task(batcher.run(images(*range(16))))  # fills the queue
        await asyncio.sleep(0)
        assert batcher.queued_images == 16
        with pytest.raises(QueueFullError):
            await batcher.run(images(1))
        gone.cancel()  # a client that disconnects
        await asyncio.sleep(0)
        freed = batcher.queued_images, registry.get_sample_value("tfclassify_queued_images", labels)
        assert registry.get_sample_value("tfclassify_batches_in_flight", labels) == 1
        # While the first batch is still running, the freed slots take a new request.
        newcomer = await batcher.run(images(*range(100, 116)))
        await running
        await batcher.close()
        return freed, newcomer, model.batches

    (queued, reported), newcomer, batches = run(scenario())
    assert queued == 0 and reported == 0, "freed, and shown so, at once, not when the scheduler reaches it"
    assert newcomer["ids"].tolist() == list(range(100, 116))
    assert batches == [list(range(8)), list(range(100, 108)), list(range(108, 116))], "the gone request never ran"


class PoisonedModel(FakeModel):
    """Fails on any batch that holds image 13, as a model may fail on some inputs."""

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = super().__call__(images)
        if 13 in images[:, 0, 0]:
            raise ValueError("cannot take image 13")
        return outputs


def test_a_request_that_makes_the_model_fail_fails_alone():
    from tfclassify.server.core.errors import InferenceError

    async def scenario():
        model = PoisonedModel(0.05)
        batcher, _ = make(model)
        running = asyncio.create_task(batcher.run(images(1)))
        await asyncio.sleep(0.01)  # the next three requests queue up into one batch
        queued = [asyncio.create_task(batcher.run(images(*ids))) for ids in ((2, 3), (13,), (4,))]
        results = await asyncio.gather(running, *queued, return_exceptions=True)
        await batcher.close()
        return results, model.batches

    results, batches = run(scenario())
    assert results[1]["ids"].tolist() == [2, 3] and results[3]["ids"].tolist() == [4]
    assert isinstance(results[2], InferenceError) and "failed on this request of 1 images (ValueError)" in str(results[2])
    assert batches == [[1], [2, 3, 13, 4], [2, 3], [13], [4]], "the failed batch, then each request alone"


def test_options_fitted_to_large_images_keep_the_queue_depth_and_cap_the_warm_up():
    options = BatchingOptions(max_batch_size=4096, max_enqueued_images=65536, warmup_batch_sizes=(1, 32, 4096))
    assert options.fitted(784, 64 * 2**20) is options  # 28x28 uint8: 85,598 would fit
    fitted = options.fitted(224 * 224 * 3 * 4, 64 * 2**20)
    assert (fitted.max_batch_size, fitted.max_enqueued_images, fitted.warmup_batch_sizes) == (111, 1776, (1, 32, 111))
    assert options.fitted(10**9, 64 * 2**20).max_batch_size == 1


def test_a_request_larger_than_the_fitted_queue_is_refused_with_the_size_that_fits():
    from types import SimpleNamespace

    from tfclassify.server.core.dataplane import DataPlane
    from tfclassify.server.core.errors import InvalidInputError
    from tfclassify.server.core.feedback import FeedbackStore

    plane = DataPlane(None, 16384, FeedbackStore(10, 60))
    served = SimpleNamespace(batcher=SimpleNamespace(options=BatchingOptions().fitted(224 * 224 * 3 * 4, 64 * 2**20)),
                             runtime=SimpleNamespace(name="big", image_shape=(224, 224, 3)))
    plane.check_fits(served, 1776)
    with pytest.raises(InvalidInputError) as info:
        plane.check_fits(served, 1777)
    plane.close()
    assert str(info.value) == ("the request holds 1777 images of 224x224x3; model 'big' queues at most 1776 images of "
                               "that size (--max-batch-bytes, max_enqueued_images): send at most 1776 per request")
