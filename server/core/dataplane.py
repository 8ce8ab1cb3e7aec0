"""The transport-independent core: validate images, run the model, rank classes.

Servicers of every API (tfclassify, TensorFlow Serving, Open Inference
Protocol) resolve a version, convert protobuf messages to images, call
``DataPlane.infer`` and build their answers from its outputs; nothing in this
module knows about gRPC messages. Every request goes through its version's
batching queue; ``Call`` carries its timings to the API's meter.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tfclassify.server.core.batching import Outputs, RequestTiming
from tfclassify.server.core.calls import Call
from tfclassify.server.core.errors import InvalidInputError, ModelUnavailableError
from tfclassify.server.core.feedback import FeedbackStore, check_true_classes
from tfclassify.server.core.images import check_batch_size, check_encoded_images, check_image_batch, decode_images
from tfclassify.server.core.registry import ModelRegistry, ServedVersion

if TYPE_CHECKING:
    from tfclassify.server.runtime.model_runtime import ModelRuntime


@dataclass(frozen=True)
class ClassifyInput:
    """What a classify request asks for. Exactly one of ``images``/``encoded`` is set."""

    model: str
    version: int | None = None
    version_label: str | None = None
    images: np.ndarray | None = None  # uint8 or float32, any accepted layout
    encoded: list[bytes] | None = None  # PNG/JPEG files
    top_k: int = 0
    return_probabilities: bool = False
    omit_labels: bool = False
    #: ``time.monotonic()`` instant after which the caller no longer waits.
    deadline: float | None = None
    truth: Truth | None = None


@dataclass(frozen=True)
class Truth:
    """What a request says about its images' true classes: given now, or to be given by ``Feedback``."""

    true_classes: np.ndarray | None = None  # [N] int, -1 where unknown
    keep_as: str | None = None  # the request id to keep the predictions under for Feedback

    @classmethod
    def of(cls, true_classes, keep_for_feedback: bool, request_id: str) -> Truth | None:
        """The truth a request carries, or None (the common case, at the cost of two tests)."""
        if not true_classes and not keep_for_feedback:
            return None
        return cls(np.asarray(true_classes, dtype=np.int64) if true_classes else None,
                   request_id if keep_for_feedback else None)


@dataclass(frozen=True)
class ClassifyOutput:
    """Results for N images: the model version used and numpy columns."""

    runtime: ModelRuntime
    classes: np.ndarray  # [N] int32
    scores: np.ndarray  # [N] float32
    top_k_classes: np.ndarray  # [N, k] int32
    top_k_scores: np.ndarray  # [N, k] float32
    probabilities: np.ndarray | None  # [N, C] float32


class DataPlane:
    """Resolves model versions and runs images through each version's batching queue."""

    def __init__(self, registry: ModelRegistry, max_images_per_request: int, feedback: FeedbackStore,
                 decode_threads: int = 0, max_response_bytes: int = 64 * 1024 * 1024) -> None:
        self.registry = registry
        #: Predictions kept for Feedback calls (requests with ``keep_for_feedback``).
        self.feedback = feedback
        self.max_images_per_request = max_images_per_request
        self.max_response_bytes = max_response_bytes
        # Encoded images are decoded here, never on the event loop: a request of 16,384 PNGs takes ~0.5 s.
        # Pillow releases the GIL while it decodes; the pool bounds how many decode at once.
        self._decode_pool = ThreadPoolExecutor(decode_threads or min(4, os.cpu_count() or 1),
                                               thread_name_prefix="decode")

    async def decode(self, function: Callable[..., np.ndarray], *args: object) -> np.ndarray:
        """``function(*args)`` (a decoder of encoded images) in the decode pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, function, *args)

    def close(self) -> None:
        self._decode_pool.shutdown(wait=True)

    def resolve(self, model: str, version: int | None = None, version_label: str | None = None) -> ServedVersion:
        """The model version a request names (raises NOT_FOUND/UNAVAILABLE errors)."""
        return self.registry.resolve(model, version, version_label)

    async def infer(self, call: Call, images: np.ndarray, deadline: float | None,
                    truth: Truth | None = None) -> tuple[Outputs, np.ndarray]:
        """Run validated ``images`` ``[N, H, W, C]`` through the queue of the version ``call`` runs on
        (``call.runs_on(served)``); returns the model's outputs and each image's predicted class, which are
        counted in the metrics. Timings go to ``call``, for the version's statistics. ``truth`` (optional):
        true classes to count in the live-accuracy metrics, or a request id to keep the predictions under.

        Call it right after resolving the version, with no ``await`` in between: an unload (on this event
        loop) cannot slip in, so a request never reaches a queue that has closed.
        """
        served = call.served
        assert served is not None, "call.runs_on(served) first"
        runtime = served.runtime
        if not runtime.takes_encoded:
            self.check_fits(served, len(images))
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise InvalidInputError("images hold NaN or infinite pixel values; send finite numbers (0-255)")
        if truth is not None:  # checked before any work
            if truth.true_classes is not None:
                check_true_classes(truth.true_classes, len(images), runtime.num_classes)
            if truth.keep_as is not None:
                self.feedback.check_new(runtime.name, truth.keep_as, len(images))
        model_input = runtime.as_model_input(images)
        call.images = len(model_input)
        call.timing = timing = RequestTiming()
        call.queued_ns = time.perf_counter_ns()
        outputs = await served.batcher.run(model_input, deadline, timing)
        call.ran_ns = time.perf_counter_ns()
        if images.dtype.kind == "f":  # finite, yet so large (±3.4e38) that the model's scores overflow
            finite = np.isfinite(outputs[runtime.output_key]).all(axis=1)
            if not finite.all():
                raise InvalidInputError(
                    f"the model's scores for image(s) {np.flatnonzero(~finite)[:10].tolist()} are not finite: "
                    "their pixel values are out of range (send 0-255)"
                )
        # Every API's images count in the predicted-class metrics (argmax: logits and probabilities agree).
        classes = outputs[runtime.output_key].argmax(axis=1).astype(np.int32)
        served.metrics.count_predictions(classes)
        if truth is not None:
            if truth.true_classes is not None:
                served.metrics.count_truth(truth.true_classes, classes)
            if truth.keep_as is not None:
                self.feedback.keep(runtime.name, truth.keep_as, runtime.version, classes, runtime.num_classes,
                                   served.metrics.count_truth)
        return outputs, classes

    async def classify(self, call: Call, request: ClassifyInput) -> ClassifyOutput:
        """Classify the request's images."""
        spec = (request.model, request.version, request.version_label)
        served = call.runs_on(self.resolve(*spec))
        runtime = served.runtime
        if request.top_k > runtime.num_classes:
            raise InvalidInputError(
                f"top_k is {request.top_k} but model {runtime.name!r} has {runtime.num_classes} classes"
            )
        # Per image: class and score (~6 bytes), its label, each top-k entry alike, and the probabilities.
        label = 0 if request.omit_labels else runtime.mean_label_bytes + 2
        answer_bytes = 6 + label + request.top_k * (6 + label) + (
            4 * runtime.num_classes if request.return_probabilities else 0)
        if request.encoded is not None or runtime.takes_encoded:
            if request.encoded is None:
                raise InvalidInputError(
                    f"model {runtime.name!r} version {runtime.version} takes encoded images (PNG/JPEG files, "
                    "decoded in its graph); send the files (`encoded`), not pixels"
                )
            check_batch_size(len(request.encoded), self.max_images_per_request)
            self.check_response_size(len(request.encoded), answer_bytes)  # before decoding
            served, images = await self.files_for(call, lambda: self.resolve(*spec), request.encoded)
            runtime = served.runtime
        else:
            images = self._prepare(runtime, request)
            self.check_response_size(len(images), answer_bytes)
        outputs, classes = await self.infer(call, images, request.deadline, request.truth)
        return rank(runtime, runtime.probabilities(outputs), classes, request.top_k, request.return_probabilities)

    async def files_for(self, call: Call, resolve: Callable[[], ServedVersion],
                        files: list[bytes]) -> tuple[ServedVersion, np.ndarray]:
        """PNG/JPEG ``files`` for the version ``call`` runs, off the event loop: decoded to its size and channels,
        or, for a model that decodes files in its graph, checked (headers) and left untouched. Returns the
        version serving once they are (``resolve()``: the version before may be unloading) and the images."""
        served = call.served
        assert served is not None, "call.runs_on(served) first"
        runtime = served.runtime
        if runtime.takes_encoded:
            images = await self.decode(check_encoded_images, files, self.max_images_per_request)
        else:
            self.check_fits(served, len(files))  # before decoding: pixels take far more room than files
            images = await self.decode(decode_images, files, runtime.file_spec, self.max_images_per_request)
        served = call.runs_on(resolve())
        now = served.runtime
        if (now.takes_encoded != runtime.takes_encoded or list(now.outputs) != list(runtime.outputs)
                or (not now.takes_encoded and now.file_spec != runtime.file_spec)):
            raise ModelUnavailableError(f"model {runtime.name!r} changed to a version that takes other input while "
                                        "this request's files were read; retry")
        return served, images

    def check_fits(self, served: ServedVersion, n: int) -> None:
        """Refuse a request of more images than the version's queue can ever hold (its batches are fitted to the
        size of its images, ``--max-batch-bytes``): no retry would help."""
        most = served.batcher.options.max_enqueued_images
        if n > most:
            height, width, channels = served.runtime.image_shape
            raise InvalidInputError(
                f"the request holds {n} images of {height}x{width}x{channels}; model {served.runtime.name!r} "
                f"queues at most {most} images of that size (--max-batch-bytes, max_enqueued_images): send at most "
                f"{most} per request")

    def check_response_size(self, images: int, bytes_per_image: int) -> None:
        """Refuse, before any work, a request whose answer would pass the send limit (gRPC would fail it only
        after the model ran). ``bytes_per_image`` is the API's estimate of one image's share of the answer."""
        bytes_per_image = int(bytes_per_image * 1.25) + 1  # headroom: labels and varints vary in length
        estimate = images * bytes_per_image
        if estimate > self.max_response_bytes:
            fits = max(1, self.max_response_bytes // bytes_per_image)
            raise InvalidInputError(
                f"the answer for {images} images would be about {estimate / 2**20:.1f} MiB, over the server's "
                f"{self.max_response_bytes / 2**20:.1f} MiB message limit: send at most {fits} images per request, "
                "or ask for less per image (fewer outputs or top-k entries)"
            )

    def check_batch_size(self, n: int) -> None:
        """Reject an empty request or one over ``--max-images-per-request``."""
        check_batch_size(n, self.max_images_per_request)

    def _prepare(self, runtime: ModelRuntime, request: ClassifyInput) -> np.ndarray:
        if request.images is None:
            raise InvalidInputError("the request carries no images: set `tensor` or `encoded`")
        images = request.images
        if images.dtype == np.float32 and not runtime.takes_float:
            raise InvalidInputError(
                f"model {runtime.name!r} version {runtime.version} takes uint8 pixels; got FLOAT32 (send UINT8)"
            )
        return check_image_batch(images, runtime.image_shape, self.max_images_per_request)


def rank(
    runtime: ModelRuntime, probabilities: np.ndarray, classes: np.ndarray, top_k: int, keep_probabilities: bool
) -> ClassifyOutput:
    """Each row's predicted class (``classes``, the argmax) with its score, and its best ``top_k`` classes."""
    scores = probabilities[np.arange(len(probabilities)), classes]
    if top_k:
        # argsort of the negated scores: best first, ties broken by the lower class index.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].astype(np.int32)
        top_scores = np.take_along_axis(probabilities, order, axis=1)
    else:
        order = np.empty((len(probabilities), 0), np.int32)
        top_scores = np.empty((len(probabilities), 0), np.float32)
    return ClassifyOutput(
        runtime, classes, scores, order, top_scores, probabilities if keep_probabilities else None
    )
