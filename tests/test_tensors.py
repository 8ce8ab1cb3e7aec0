"""Packing numpy arrays into the API's Tensor message and back."""

from __future__ import annotations

import numpy as np
import pytest

from tfclassify.client.tensors import TensorError, from_tensor_proto, to_tensor_proto
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
