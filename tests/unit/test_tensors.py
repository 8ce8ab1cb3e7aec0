"""Packing numpy arrays into the API's Tensor message and back."""

from __future__ import annotations

import numpy as np
import pytest

from tfclassify.common.tensors import TensorError, from_tensor_proto, to_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, ">f4"])
def test_round_trip(dtype):
    array = (np.arange(2 * 28 * 28) % 251).reshape(2, 28, 28).astype(dtype)
    tensor = to_tensor_proto(array)
    assert list(tensor.shape) == [2, 28, 28]
    back = from_tensor_proto(pb.Tensor.FromString(tensor.SerializeToString()))
    assert back.dtype.itemsize == np.dtype(dtype).itemsize and np.array_equal(back, array)


def test_rejects_unsupported_and_inconsistent_tensors():
    with pytest.raises(TensorError, match="unsupported dtype int64"):
        to_tensor_proto(np.zeros(3, np.int64))
    with pytest.raises(TensorError, match="is 10 bytes but shape \\[2, 28, 28\\] of UINT8 needs 1568 bytes"):
        from_tensor_proto(pb.Tensor(dtype=pb.UINT8, shape=[2, 28, 28], content=b"x" * 10))
    with pytest.raises(TensorError, match="unsupported tensor dtype DATA_TYPE_UNSPECIFIED"):
        from_tensor_proto(pb.Tensor(shape=[1], content=b"x"))


def _classification_reference(scores: np.ndarray, top_k: int, suffixes: list[bytes]) -> bytes:
    """The classification extension's bytes the plain way: Python's "%f", one entry at a time."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    top = np.take_along_axis(scores, order, axis=1)
    parts = []
    for scores_row, order_row in zip(top.tolist(), order.tolist()):
        for score, index in zip(scores_row, order_row):
            item = b"%f" % score + suffixes[index]
            parts += [len(item).to_bytes(4, "little"), item]
    return b"".join(parts)


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_vectorised_classification_entries_match_printf_byte_for_byte(top_k):
    from tfclassify.server.apis.oip_tensors import classification_raw

    rng = np.random.default_rng(7)
    labels = [f":{i}:{name}".encode() for i, name in enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])]
    kana = [f":{i}:{c}".encode() for i, c in enumerate("おきすつなはまやれを")]  # Kuzushiji-49's labels are kana
    probabilities = rng.random((1024, 10)).astype(np.float32)
    # Halfway cases of the 6th decimal, signed zeros, tiny negatives, large logits, ties between classes.
    edges = np.array([[-0.0, 0.0, 0.5e-6, 1.5e-6, 2.5e-6, -1e-7, 123456789.0, -98765.4321, 1.0, 0.9999995],
                      [0.25, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    logits = (rng.standard_normal((256, 10)) * rng.choice([1e-7, 1.0, 1e3, 1e8], (256, 10))).astype(np.float32)
    for scores, suffixes in ((probabilities, labels), (probabilities, kana), (edges, labels), (logits, labels),
                             (probabilities.astype(np.float64), labels)):
        assert classification_raw(scores, top_k, suffixes) == _classification_reference(scores, top_k, suffixes)
