"""Score a whole array of images against a server: a bounded pipeline of
batches in flight, results gathered in order, every image scored exactly once."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from tfclassify.client.client import ClassifierClient, ClassifyFuture
from tfclassify.client.errors import TfclassifyError

log = logging.getLogger(__name__)

#: Codes after which the same batch is sent again: the server did not answer it (overloaded,
#: restarting, or shutting down while the request was still arriving). The scorer never
#: cancels its own calls, so CANCELLED here comes from the server side.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)


@dataclass
class ScoringResult:
    """Predictions for every image, in input order."""

    classes: np.ndarray  # [N] int32
    scores: np.ndarray  # [N] float32
    #: Model versions that answered, with how many images each classified.
    versions: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    retries: int = 0

    @property
    def images_per_second(self) -> float:
        return len(self.classes) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def score_images(
    client: ClassifierClient,
    images: np.ndarray,
    model: str,
    *,
    version: int | None = None,
    version_label: str | None = None,
    batch_size: int = 0,
    max_in_flight: int = 4,
    timeout: float = 60.0,
    max_retries: int = 3,
    on_progress: Callable[[int], None] | None = None,
) -> ScoringResult:
    """Classify ``images`` ``[N, H, W]`` in batches of ``batch_size``; returns class indices and scores.

    ``batch_size`` 0 picks one: the largest power of two up to 4096 that
    still makes 8 batches, so small sets keep the pipeline full and large
    ones get the throughput of big TensorFlow calls.

    Up to ``max_in_flight`` batches are on the wire at once, so the server
    computes one while the next travels. Each RPC has a ``timeout`` s
    deadline. A batch refused with UNAVAILABLE or RESOURCE_EXHAUSTED is sent
    again (up to ``max_retries`` times, with backoff); any other failure
    raises ``TfclassifyError`` naming the batch, so no image is ever skipped
    silently. ``on_progress(n)`` is called as each batch of n images completes.
    """
    n = len(images)
    batch_size = batch_size or auto_batch_size(n)
    if batch_size < 1 or max_in_flight < 1:
        raise ValueError("batch_size and max_in_flight must be at least 1")
    classes = np.empty(n, dtype=np.int32)
    scores = np.empty(n, dtype=np.float32)
    result = ScoringResult(classes, scores)

    def submit(start: int) -> ClassifyFuture:
        return client.classify_async(
            images[start : start + batch_size], model, version=version, version_label=version_label,
            timeout=timeout, omit_labels=True,
        )

    started = time.monotonic()
    starts = iter(range(0, n, batch_size))
    in_flight: deque[tuple[int, ClassifyFuture]] = deque()
    for start in starts:
        in_flight.append((start, submit(start)))
        if len(in_flight) >= max_in_flight:
            break
    while in_flight:
        start, future = in_flight.popleft()
        batch = _wait_with_retries(future, lambda s=start: submit(s), start, batch_size, max_retries, result)
        stop = start + len(batch)
        if len(batch) != min(batch_size, n - start):
            raise TfclassifyError(
                grpc.StatusCode.INTERNAL,
                f"server answered {len(batch)} results for images {start}..{stop - 1}",
            )
        classes[start:stop] = batch.classes
        scores[start:stop] = batch.scores
        result.versions[batch.version] = result.versions.get(batch.version, 0) + len(batch)
        next_start = next(starts, None)
        if next_start is not None:
            in_flight.append((next_start, submit(next_start)))
        if on_progress is not None:
            on_progress(len(batch))
    result.elapsed_s = time.monotonic() - started
    return result


def auto_batch_size(n: int, largest: int = 4096, smallest: int = 256, batches: int = 8) -> int:
    """The largest power of two in [smallest, largest] that splits ``n`` images into ``batches`` or more."""
    size = largest
    while size > smallest and n < size * batches:
        size //= 2
    return size


def _wait_with_retries(future, resubmit, start, batch_size, max_retries, result: ScoringResult):
    for attempt in range(max_retries + 1):
        try:
            return future.result()
        except TfclassifyError as exc:
            if exc.code not in RETRYABLE_CODES or attempt == max_retries:
                raise TfclassifyError(
                    exc.code, f"batch of images {start}..{start + batch_size - 1} failed: {exc.details}"
                ) from exc
            delay = min(2.0, 0.1 * 2**attempt)
            log.warning("batch at %d: %s; retrying in %.1f s", start, exc, delay)
            result.retries += 1
            time.sleep(delay)
            future = resubmit()
    raise AssertionError("unreachable")
