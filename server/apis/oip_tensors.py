"""numpy arrays to and from Open Inference Protocol tensors: datatype names,
``raw_*_contents`` bytes and typed ``InferTensorContents``."""

from __future__ import annotations

import math
import struct

import numpy as np

from tfclassify.server.core.errors import InvalidInputError
from tfclassify.server.core.images import files_array

#: Protocol datatype -> numpy dtype (little-endian, as the protocol's raw contents are).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
#: Which ``InferTensorContents`` field holds each datatype (FP16 has none: raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
#: Most dimensions of an input tensor (images: [N, H, W, C] at most, or [N, 1] files).
MAX_DIMENSIONS = 8
#: The model-configuration enum name of each datatype (Triton's ``DataType``).
CONFIG_TYPES = {name: "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}" for name in DTYPES}


_NAMES = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype) -> str:
    """The protocol datatype name of a numpy dtype (strings and bytes are BYTES)."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    name = _NAMES.get(dtype.newbyteorder("<"))
    if name is None:
        raise ValueError(f"no Open Inference Protocol datatype for numpy {dtype}")
    return name


def from_raw(data: bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Decode one input's ``raw_input_contents`` entry (numeric datatypes)."""
    dtype = DTYPES[datatype]
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod wraps around for huge shapes
    if len(data) != expected:
        raise InvalidInputError(
            f"input '{name}': {len(data)} bytes of raw contents; shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(data, dtype).reshape(shape)


def from_raw_bytes(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Decode a BYTES input's ``raw_input_contents`` entry: each element a 4-byte little-endian length, then
    that many bytes (the protocol's encoding), into an object array of ``shape``."""
    count = math.prod(shape)
    items: list[bytes] = []
    offset = 0
    while offset < len(data) and len(items) < count:
        if offset + 4 > len(data):
            break
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInputError(f"input '{name}': element {len(items)} declares {length} bytes but only "
                                    f"{len(data) - offset} remain in the raw contents")
        items.append(data[offset:offset + length])
        offset += length
    if len(items) != count or offset != len(data):
        raise InvalidInputError(f"input '{name}': the raw BYTES contents do not hold exactly {count} length-prefixed "
                                f"elements for shape {list(shape)}")
    return files_array(items).reshape(shape)


def from_contents(contents, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Decode one input's typed ``contents`` (BYTES into an object array of ``bytes``)."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInputError(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input '{name}': {len(values)} values in contents.{field}; shape {list(shape)} needs {count}"
        )
    dtype = DTYPES[datatype]
    if datatype == "BYTES":
        return files_array(values).reshape(shape)
    array = np.asarray(values)
    if array.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInputError(f"input '{name}': values outside the {datatype} range {info.min}..{info.max}")
    return array.astype(dtype).reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    """``array`` as raw output contents (BYTES elements length-prefixed)."""
    if array.dtype.kind in ("O", "S", "U"):
        parts = []
        for item in array.ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()


def classification_raw(scores: np.ndarray, top_k: int, suffixes: list[bytes]) -> bytes:
    """The classification extension's output as raw BYTES contents: each row's ``top_k`` best entries as
    ``score + suffixes[index]`` (the score as C's ``%f`` prints it), length-prefixed, best first, the lower
    index first among equal scores. Vectorised: one table of bytes for all entries, no loop over images."""
    if top_k == 1:
        order = scores.argmax(axis=1)[:, np.newaxis]
    else:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    top = np.take_along_axis(scores, order, axis=1).ravel()
    order = order.ravel()
    if top.dtype != np.float32 or not np.isfinite(top).all():
        return to_raw(np.array([b"%f%s" % (float(v), suffixes[i]) for v, i in zip(top.tolist(), order.tolist())],
                               dtype=object))
    # A float32 times 10**6 is exact in float64 (24 + 20 bits), so rounding it half-to-even is what printf
    # does with the exact value.
    units = np.rint(np.abs(top.astype(np.float64)) * 1e6).astype(np.int64)
    whole, fraction = np.divmod(units, 1_000_000)
    negative = np.signbit(top)
    powers = 10 ** np.arange(19, dtype=np.int64)
    digits = 1 + (whole[:, None] >= powers[1:]).sum(axis=1)  # of the whole part (at least one: "0")
    width = int(digits.max())
    suffix_table = np.array(suffixes)  # fixed-width bytes, NUL-padded
    suffix_width = suffix_table.dtype.itemsize
    suffix_lengths = np.char.str_len(suffix_table)[order]
    lengths = (negative + digits + 7 + suffix_lengths).astype("<u4")
    n = len(top)
    columns = 4 + 1 + width + 1 + 6 + suffix_width
    table = np.zeros((n, columns), np.uint8)
    keep = np.zeros((n, columns), bool)
    table[:, :4] = lengths.view(np.uint8).reshape(n, 4)
    keep[:, :4] = True
    table[:, 4] = ord("-")
    keep[:, 4] = negative
    at = 5
    table[:, at : at + width] = ord("0") + (whole[:, None] // powers[width - 1 :: -1][:width]) % 10
    keep[:, at : at + width] = np.arange(width) >= (width - digits)[:, None]
    at += width
    table[:, at] = ord(".")
    keep[:, at] = True
    table[:, at + 1 : at + 7] = ord("0") + (fraction[:, None] // powers[5::-1]) % 10
    keep[:, at + 1 : at + 7] = True
    at += 7
    table[:, at:] = suffix_table.view(np.uint8).reshape(len(suffix_table), suffix_width)[order]
    keep[:, at:] = np.arange(suffix_width) < suffix_lengths[:, None]
    return table[keep].tobytes()
