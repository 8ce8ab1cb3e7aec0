"""Live accuracy: true classes given with a request, or later by ``Feedback`` for a kept request.

A request may carry its images' true classes: they are compared with the
predictions as soon as those exist. A request that sets ``keep_for_feedback``
leaves its predicted classes here under its request id, for a ``Feedback``
call that brings the truth later (after a human review, say). Either way the
counts go to the metrics of the version that classified the images.

Nothing is kept or counted for a request that asks for neither: the cost of
the feature is one attribute test per request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tfclassify.server.core.errors import AlreadyExistsError, FeedbackNotFoundError, InvalidInputError

#: Counts (true, predicted) of a version's images in its metrics; returns (labelled, correct).
TruthCounter = Callable[[np.ndarray, np.ndarray], tuple[int, int]]


def check_true_classes(true: np.ndarray, images: int, num_classes: int, what: str = "true_classes") -> None:
    """Refuse true classes that are not one per image, each -1 (unknown) or a class index of the model."""
    if len(true) != images:
        raise InvalidInputError(f"{what} holds {len(true)} entries for {images} images: give one per image "
                                "(-1 where the class is unknown)")
    if len(true) and (true.min() < -1 or true.max() >= num_classes):
        bad = true[(true < -1) | (true >= num_classes)]
        raise InvalidInputError(f"{what} holds {int(bad[0])}: each must be -1 (unknown) or a class index "
                                f"from 0 to {num_classes - 1}")


def count_truth(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per true class: how many images were labelled, and how many of them predicted right (-1s left out)."""
    known = true >= 0
    t, p = true[known], predicted[known]
    return np.bincount(t, minlength=num_classes), np.bincount(t[t == p], minlength=num_classes)


@dataclass
class _Kept:
    model: str
    version: int
    predicted: np.ndarray  # [N] int32
    num_classes: int
    counter: TruthCounter
    expires: float  # time.monotonic()


class FeedbackStore:
    """Predictions kept by request id, bounded in images and in time; the oldest go first."""

    def __init__(self, capacity_images: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity_images = capacity_images
        self.ttl_s = ttl_s
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self.images = 0

    def __len__(self) -> int:
        return len(self._kept)

    def check_new(self, model: str, request_id: str, images: int) -> None:
        """Refuse, before any work, a request that cannot be kept: no id, an id already kept, too many images."""
        if not request_id:
            raise InvalidInputError("keep_for_feedback needs a request_id: Feedback finds the predictions by it")
        if images > self.capacity_images:
            raise InvalidInputError(f"keep_for_feedback: {images} images are more than the server keeps for feedback "
                                    f"({self.capacity_images}, --feedback-capacity)")
        self._expire()
        if (model, request_id) in self._kept:
            raise AlreadyExistsError(f"predictions for request id {request_id!r} of model {model!r} are already kept "
                                     "for feedback: use a new request id per request")

    def keep(self, model: str, request_id: str, version: int, predicted: np.ndarray, num_classes: int,
             counter: TruthCounter) -> None:
        """Keep a request's predictions; the oldest are dropped to stay within the capacity."""
        key = (model, request_id)
        old = self._kept.pop(key, None)  # a concurrent request with the same id: the later one is kept
        if old is not None:
            self.images -= len(old.predicted)
        self._kept[key] = _Kept(model, version, predicted, num_classes, counter, self._clock() + self.ttl_s)
        self.images += len(predicted)
        while self.images > self.capacity_images:
            _, dropped = self._kept.popitem(last=False)
            self.images -= len(dropped.predicted)

    def judge(self, model: str, request_id: str, true: np.ndarray) -> tuple[int, int, int]:
        """Count a kept request against its true classes, once; returns (version, labelled, correct)."""
        self._expire()
        kept = self._kept.get((model, request_id))
        if kept is None:
            raise FeedbackNotFoundError(
                f"no predictions kept for request id {request_id!r} of model {model!r}: the request did not set "
                f"keep_for_feedback, its feedback was already given, or it expired (--feedback-ttl-s {self.ttl_s:g}) "
                f"or was dropped to keep {self.capacity_images} images (--feedback-capacity)"
            )
        check_true_classes(true, len(kept.predicted), kept.num_classes)
        del self._kept[(model, request_id)]
        self.images -= len(kept.predicted)
        labelled, correct = kept.counter(true, kept.predicted)
        return kept.version, labelled, correct

    def _expire(self) -> None:
        now = self._clock()
        while self._kept:
            key, oldest = next(iter(self._kept.items()))
            if oldest.expires > now:
                break
            del self._kept[key]
            self.images -= len(oldest.predicted)
