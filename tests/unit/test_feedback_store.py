"""The server's store of answers awaiting their true classes (``Feedback``), alone: bounds and expiry."""

from __future__ import annotations

import numpy as np
import pytest

from tfclassify.server.core.errors import AlreadyExistsError, FeedbackNotFoundError, InvalidInputError
from tfclassify.server.core.feedback import FeedbackStore


def test_feedback_store_bounds_and_expiry():
    """The store alone (no TensorFlow): the oldest go first past the capacity, and after the TTL."""
    now = [0.0]
    store = FeedbackStore(capacity_images=10, ttl_s=60, clock=lambda: now[0])
    counted = []

    def counter(true, predicted):
        counted.append((true.tolist(), predicted.tolist()))
        return int((true >= 0).sum()), int((true == predicted).sum())

    for i in range(3):
        store.check_new("m", f"r{i}", 4)
        store.keep("m", f"r{i}", 1, np.array([0, 1, 2, 3]), 4, counter)
    assert len(store) == 2 and store.images == 8, "r0 dropped to stay within 10 images"
    with pytest.raises(FeedbackNotFoundError):
        store.judge("m", "r0", np.array([0, 1, 2, 3]))
    with pytest.raises(AlreadyExistsError):
        store.check_new("m", "r1", 4)
    with pytest.raises(InvalidInputError, match="more than the server keeps"):
        store.check_new("m", "big", 11)
    assert store.judge("m", "r1", np.array([0, 0, -1, 3])) == (1, 3, 2)
    now[0] = 61.0
    with pytest.raises(FeedbackNotFoundError, match="expired"):
        store.judge("m", "r2", np.array([0, 1, 2, 3]))
    assert store.images == 0 and counted == [([0, 0, -1, 3], [0, 1, 2, 3])]
