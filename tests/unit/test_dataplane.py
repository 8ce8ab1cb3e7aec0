"""``DataPlane``: a classify request of pixels through a fake version's batching queue (no TensorFlow): the ranked
answer, the checks that refuse a request before any work (shape, data type, count, queue size, answer size, top-k,
non-finite pixels) with the message a client sees, and ``files_for`` when the version changes under a request."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fake_models import FakeRuntime, served_version
from PIL import Image

from tfclassify.common.image_files import ConversionSpec
from tfclassify.server.core.calls import Call
from tfclassify.server.core.dataplane import ClassifyInput, DataPlane, Truth
from tfclassify.server.core.errors import InvalidInputError, ModelNotFoundError, ModelUnavailableError
from tfclassify.server.core.feedback import FeedbackStore
from tfclassify.server.core.registry import ModelRegistry


def pixels(*first: int, shape: tuple[int, ...] = (4, 4, 1), dtype=np.uint8) -> np.ndarray:
    """Images whose first pixel is ``first[i]``: the fake model's class ``first[i] % 3``."""
    images = np.zeros((len(first), *shape), dtype)
    images.reshape(len(first), -1)[:, 0] = first
    return images


def scenario(check, *runtimes: FakeRuntime, max_images: int = 32, max_response_bytes: int = 64 * 2**20, **options):
    """Run ``check(plane, runtimes)`` on an event loop, the ``runtimes`` served (with ``options`` for batching)."""
    async def main():
        executor = ThreadPoolExecutor(2)
        registry = ModelRegistry()
        for runtime in runtimes:
            registry.add(served_version(runtime, executor, **options))
        plane = DataPlane(registry, max_images, FeedbackStore(capacity_images=100, ttl_s=60), decode_threads=1,
                          max_response_bytes=max_response_bytes)
        try:
            return await check(plane, runtimes)
        finally:
            plane.close()
            executor.shutdown()

    return asyncio.run(main())


def classify(plane: DataPlane, **request):
    return plane.classify(Call(), ClassifyInput(**{"model": "m", **request}))


def test_pixels_are_classified_ranked_and_counted():
    async def check(plane, runtimes):
        call = Call()
        out = await plane.classify(call, ClassifyInput("m", images=pixels(0, 1, 2, 4, 5), top_k=2,
                                                       return_probabilities=True))
        assert out.runtime is runtimes[0] and call.version == "1" and call.images == 5
        assert out.classes.tolist() == [0, 1, 2, 1, 2] and out.scores.tolist() == [1.0] * 5
        assert out.top_k_classes.tolist() == [[0, 1], [1, 0], [2, 0], [1, 0], [2, 0]], "ties: the lower class first"
        assert out.top_k_scores.tolist() == [[1.0, 0.0]] * 5
        assert out.probabilities.shape == (5, 3)
        plain = await classify(plane, images=pixels(7).reshape(1, 16))  # flattened [N, H*W*C], no top-k
        assert plain.classes.tolist() == [1] and plain.top_k_classes.shape == (1, 0) and plain.probabilities is None
        grey = await classify(plane, images=pixels(8).reshape(1, 4, 4))  # [N, H, W] for a one-channel model
        assert grey.classes.tolist() == [2]
        assert runtimes[0].batches == [5, 1, 1], "each request ran, whole, once"

    scenario(check, FakeRuntime())


def test_a_request_resolves_the_version_it_names():
    async def check(plane, runtimes):
        assert (await classify(plane, images=pixels(1))).runtime is runtimes[1], "the latest by default"
        assert (await classify(plane, images=pixels(1), version=1)).runtime is runtimes[0]
        with pytest.raises(ModelNotFoundError, match=r"^model 'm' has no version 5; available: 1, 2$"):
            await classify(plane, images=pixels(1), version=5)
        with pytest.raises(ModelNotFoundError, match=r"^model 'x' not found; served models: m$"):
            await classify(plane, model="x", images=pixels(1))
        assert runtimes[0].batches == [1] and runtimes[1].batches == [1]

    scenario(check, FakeRuntime(version=1), FakeRuntime(version=2))


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 5, 5, 1), np.uint8), "images have shape [2, 5, 5, 1]; expected "),
    (np.zeros((2, 4, 4, 3), np.uint8), "images have shape [2, 4, 4, 3]; expected "),
    (np.zeros((0, 4, 4, 1), np.uint8), "the request holds no images; send a batch of 1 or more"),
    (np.zeros((33, 4, 4, 1), np.uint8), "the request holds 33 images; at most 32 per request are accepted "
                                        "(split the batch, or raise --max-images-per-request)"),
    (np.zeros((1, 4, 4, 1), np.float32), "model 'm' version 1 takes uint8 pixels; got FLOAT32 (send UINT8)"),
    (None, "the request carries no images: set `tensor` or `encoded`"),
])
def test_malformed_pixels_are_refused_before_the_model_runs(images, message):
    async def check(plane, runtimes):
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=images)
        assert str(info.value).startswith(message), str(info.value)
        assert runtimes[0].batches == []

    scenario(check, FakeRuntime())


def test_three_channels_say_what_the_model_takes():
    async def check(plane, runtimes):
        with pytest.raises(InvalidInputError, match=r"\(the model takes 1-channel images; these have 3\)$"):
            await classify(plane, images=np.zeros((1, 4, 4, 3), np.uint8))

    scenario(check, FakeRuntime())


def test_float_models_take_finite_floats_only():
    async def check(plane, runtimes):
        assert (await classify(plane, images=pixels(2, dtype=np.float32))).classes.tolist() == [2]
        bad = pixels(1, 2, dtype=np.float32)
        bad[1, 3, 3, 0] = np.nan
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=bad)
        assert str(info.value) == "images hold NaN or infinite pixel values; send finite numbers (0-255)"
        assert runtimes[0].batches == [1]

    scenario(check, FakeRuntime(takes_float=True))


def test_top_k_past_the_classes_and_requests_larger_than_the_queue_are_refused():
    async def check(plane, runtimes):
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=pixels(1), top_k=4)
        assert str(info.value) == "top_k is 4 but model 'm' has 3 classes"
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=np.zeros((17, 4, 4, 1), np.uint8))
        assert str(info.value) == ("the request holds 17 images of 4x4x1; model 'm' queues at most 16 images of that "
                                   "size (--max-batch-bytes, max_enqueued_images): send at most 16 per request")
        assert len((await classify(plane, images=np.zeros((16, 4, 4, 1), np.uint8))).classes) == 16
        assert runtimes[0].batches == [8, 8], "16 images: two batches of the queue's 8"

    scenario(check, FakeRuntime())


def test_an_answer_past_the_message_limit_is_refused_before_any_work():
    # Per image: 6 bytes + the label (4 + 2): 12, with 25% headroom 16 bytes; 1,000 bytes hold 62 images.
    async def check(plane, runtimes):
        assert len((await classify(plane, images=np.zeros((62, 4, 4, 1), np.uint8))).classes) == 62
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=np.zeros((63, 4, 4, 1), np.uint8))
        assert str(info.value) == (
            "the answer for 63 images would be about 0.0 MiB, over the server's 0.0 MiB message limit: send at "
            "most 62 images per request, or ask for less per image (fewer outputs or top-k entries)")
        assert len((await classify(plane, images=np.zeros((63, 4, 4, 1), np.uint8), omit_labels=True)).classes) == 63
        assert sum(runtimes[0].batches) == 62 + 63

    scenario(check, FakeRuntime(labels=("zero", "one!", "two!")), max_images=100, max_response_bytes=1000,
             max_batch_size=64, max_enqueued_images=128)


def test_true_classes_are_checked_against_the_images_and_the_model():
    async def check(plane, runtimes):
        with pytest.raises(InvalidInputError):
            await classify(plane, images=pixels(1, 2), truth=Truth(np.array([1]), None))
        with pytest.raises(InvalidInputError):
            await classify(plane, images=pixels(1), truth=Truth(np.array([3]), None))
        assert runtimes[0].batches == [], "checked before any work"
        out = await classify(plane, images=pixels(1, 2), truth=Truth(np.array([1, 0]), "r1"))
        assert out.classes.tolist() == [1, 2] and len(plane.feedback) == 1

    scenario(check, FakeRuntime())


def png(value: int, size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_files_are_decoded_to_the_models_input_and_refused_when_the_version_changes_meanwhile():
    spec = ConversionSpec(4, 4, channels=1)

    async def check(plane, runtimes):
        old, same, other = runtimes
        call = Call()
        call.runs_on(plane.registry.get("m", 1))
        served, images = await plane.files_for(call, lambda: plane.registry.get("m", 2), [png(4), png(5, (8, 8))])
        assert served.runtime is same and call.version == "2", "the version serving once the files are read"
        assert images.shape == (2, 4, 4, 1) and images.dtype == np.uint8
        assert images[0].ravel().tolist() == [4] * 16 and images[1].ravel().tolist() == [5] * 16
        with pytest.raises(ModelUnavailableError) as info:
            await plane.files_for(call, lambda: plane.registry.get("m", 3), [png(1)])
        assert str(info.value) == ("model 'm' changed to a version that takes other input while this request's files "
                                   "were read; retry")
        out = await classify(plane, version=1, encoded=[png(1), png(2)])
        assert out.classes.tolist() == [1, 2] and old.batches == [2] and same.batches == other.batches == []

    scenario(check, FakeRuntime(version=1, file_spec=spec), FakeRuntime(version=2, file_spec=spec),
             FakeRuntime(version=3, file_spec=ConversionSpec(8, 8, channels=1)))


def test_pixels_for_a_model_that_decodes_files_itself_are_refused():
    async def check(plane, runtimes):
        with pytest.raises(InvalidInputError) as info:
            await classify(plane, images=pixels(1))
        assert str(info.value) == ("model 'm' version 1 takes encoded images (PNG/JPEG files, decoded in its graph); "
                                   "send the files (`encoded`), not pixels")

    scenario(check, FakeRuntime(takes_encoded=True))
