"""How the client cuts large calls into requests within a byte budget, and score's automatic batch size: pure
functions (tests/system/test_client_bytes.py sends such calls to a server)."""

from __future__ import annotations

import numpy as np

from tfclassify.client.requests import byte_slices, pixel_slices
from tfclassify.client.scoring import auto_batch_size

SIDE = 224
IMAGE_BYTES = SIDE * SIDE * 3  # 150,528


def test_slices_keep_every_request_within_the_budget():
    images = np.zeros((1000, SIDE, SIDE, 3), np.uint8)
    parts = pixel_slices(images, 16 * 2**20)
    assert [p.stop - p.start for p in parts] == [111] * 9 + [1]
    assert pixel_slices(images[:3], 1000) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # larger than it: alone
    assert byte_slices([5, 5, 5, 20, 1, 1], 10) == [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 6)]
    assert byte_slices([], 10) == []
    # score's default batch: the largest power of two whose pixels fit the budget
    assert auto_batch_size(100_000, image_bytes=IMAGE_BYTES) == 64
    assert auto_batch_size(100_000, image_bytes=28 * 28) == 4096
    assert auto_batch_size(100, image_bytes=IMAGE_BYTES, max_request_bytes=4 * 2**20) == 16
    assert auto_batch_size(100, image_bytes=28 * 28) == 256  # as before for small images
