"""The transport-independent core: validate images, run the model, rank classes.

Servicers of every API (tfclassify, TensorFlow Serving, Open Inference
Protocol) convert protobuf messages to the types here and back; nothing in
this module knows about gRPC messages. Every request goes through its
version's batching queue and is counted in its version's statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tfclassify.server.batching import Outputs, RequestTiming
from tfclassify.server.errors import InvalidInputError
from tfclassify.server.images import check_batch_size, check_image_batch, decode_images
from tfclassify.server.registry import ModelRegistry, ServedVersion
from tfclassify.server.runtime import ModelRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    #: ``time.monotonic()`` instant after which the caller no longer waits.
    deadline: float | None = None


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
    """Classifies batches with the models in ``registry``, through each version's batching queue."""

    def __init__(self, registry: ModelRegistry, max_images_per_request: int) -> None:
        self.registry = registry
        self.max_images_per_request = max_images_per_request

    def resolve(self, model: str, version: int | None = None, version_label: str | None = None) -> ServedVersion:
        """The model version a request names (raises NOT_FOUND/UNAVAILABLE errors)."""
        return self.registry.resolve(model, version, version_label)

    async def classify(self, request: ClassifyInput) -> ClassifyOutput:
        """Classify the request's images."""
        # No `await` between resolving the version and entering its queue: an
        # unload (on this event loop) cannot slip in between, so a request never
        # reaches a queue that has closed.
        served = self.resolve(request.model, request.version, request.version_label)
        runtime = served.runtime

        def prepare() -> np.ndarray:
            if request.top_k > runtime.num_classes:
                raise InvalidInputError(
                    f"top_k is {request.top_k} but model {runtime.name!r} has {runtime.num_classes} classes"
                )
            return self._prepare(runtime, request)

        def respond(outputs: Outputs) -> ClassifyOutput:
            return rank(runtime, runtime.probabilities(outputs), request.top_k, request.return_probabilities)

        return await self.run(served, prepare, respond, request.deadline)

    def check_batch_size(self, n: int) -> None:
        """Reject an empty request or one over ``--max-images-per-request``."""
        check_batch_size(n, self.max_images_per_request)

    async def run(
        self,
        served: ServedVersion,
        prepare: Callable[[], np.ndarray],
        respond: Callable[[Outputs], T],
        deadline: float | None,
    ) -> T:
        """Run one request on ``served``: ``prepare`` returns its images ``[N, H, W]``
        (validated), the batching queue runs them, ``respond`` turns the model's
        outputs into the answer. Accounted in the version's statistics.

        Call it right after resolving ``served``, with no ``await`` in between.
        """
        statistics = served.metrics.statistics
        runtime = served.runtime
        timing = RequestTiming()
        started = time.perf_counter_ns()
        try:
            images = runtime.as_model_input(prepare())
            queued = time.perf_counter_ns()
            outputs = await served.batcher.run(images, deadline, timing)
            ran = time.perf_counter_ns()
            answer = respond(outputs)
            # Every API's images count in the predicted-class metrics (argmax: logits and probabilities agree).
            served.metrics.count_predictions(outputs[runtime.output_key].argmax(axis=1))
        except BaseException:  # cancelled callers count as failed, as in Triton
            statistics.record_failure(time.perf_counter_ns() - started)
            raise
        finished = time.perf_counter_ns()
        statistics.record_success(
            len(images), finished - started, queued - started, int(timing.queue * 1e9), int(timing.infer * 1e9),
            finished - ran,
        )
        return answer

    def _prepare(self, runtime: ModelRuntime, request: ClassifyInput) -> np.ndarray:
        height, width = runtime.image_size
        if request.encoded is not None:
            return decode_images(request.encoded, height, width, self.max_images_per_request)
        if request.images is None:
            raise InvalidInputError("the request carries no images: set `tensor` or `encoded`")
        images = request.images
        if images.dtype == np.float32 and not runtime.takes_float:
            raise InvalidInputError(
                f"model {runtime.name!r} version {runtime.version} takes uint8 pixels; got FLOAT32 (send UINT8)"
            )
        return check_image_batch(images, height, width, self.max_images_per_request)


def rank(runtime: ModelRuntime, probabilities: np.ndarray, top_k: int, keep_probabilities: bool) -> ClassifyOutput:
    """Prediction, its score and the best ``top_k`` classes of every row."""
    rows = np.arange(len(probabilities))
    classes = probabilities.argmax(axis=1).astype(np.int32)
    scores = probabilities[rows, classes]
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
