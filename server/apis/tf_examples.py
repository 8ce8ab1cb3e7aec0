"""Images out of ``tf.train.Example`` protos, for TensorFlow Serving's ``Classify``.

Each example carries one image in a feature named ``image`` or
``image/encoded`` (the TFRecord convention), holding one of:

- an ``int64_list`` of H*W*C pixel values 0-255, row by row (C channels per pixel);
- a ``float_list`` of H*W*C pixel values 0.0-255.0 (rounded to 8 bits);
- a ``bytes_list`` with one value: a PNG or JPEG file, or H*W*C raw pixel bytes.

Features of the ``context`` example (``example_list_with_context``) apply to
every example that does not set them itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2

from tfclassify.common.image_files import ConversionSpec, is_png_or_jpeg
from tfclassify.server.core.errors import InvalidInputError
from tfclassify.server.core.images import MAX_REQUEST_FILE_PIXELS, check_file_headers, decode_image

#: Feature names looked up for the image, in this order.
IMAGE_FEATURES = ("image", "image/encoded")


def images_from_examples(
    examples: Sequence[example_pb2.Example], context: example_pb2.Example | None, spec: ConversionSpec
) -> np.ndarray:
    """The images of ``examples`` as a uint8 batch ``[N, height, width, channels]`` of ``spec`` (PNG/JPEG files
    in them decoded as ``spec`` says)."""
    features = [_image_feature(example, context, i) for i, example in enumerate(examples)]
    files = {i: f.bytes_list.value[0] for i, f in enumerate(features)
             if f.WhichOneof("kind") == "bytes_list" and len(f.bytes_list.value) == 1
             and is_png_or_jpeg(f.bytes_list.value[0])}
    if files:  # resized files: their headers first, so that many large ones cost nothing before they are refused
        check_file_headers(list(files.values()), len(files), spec.max_pixels, MAX_REQUEST_FILE_PIXELS,
                           [f"example {i}" for i in files])
    batch = np.empty((len(examples), spec.height, spec.width, spec.channels), np.uint8)
    for i, feature in enumerate(features):
        batch[i] = _pixels(feature, spec, f"example {i}")
    return batch


def _image_feature(
    example: example_pb2.Example, context: example_pb2.Example | None, index: int
) -> feature_pb2.Feature:
    for features in (example.features.feature, context.features.feature if context is not None else {}):
        for name in IMAGE_FEATURES:
            if name in features:
                return features[name]
    present = sorted(example.features.feature)
    raise InvalidInputError(
        f"example {index} has no image feature: expected one named {' or '.join(map(repr, IMAGE_FEATURES))} "
        f"(features present: {', '.join(present) or 'none'})"
    )


def _pixels(feature: feature_pb2.Feature, spec: ConversionSpec, what: str) -> np.ndarray:
    height, width, channels = shape = spec.height, spec.width, spec.channels
    size = height * width * channels
    described = f"{height}x{width}" if channels == 1 else f"{height}x{width}x{channels}"
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        values = feature.bytes_list.value
        if len(values) != 1:
            raise InvalidInputError(f"{what}: the image bytes feature holds {len(values)} values; expected 1")
        data = values[0]
        if is_png_or_jpeg(data):
            return decode_image(data, spec, what)
        if len(data) == size:
            return np.frombuffer(data, np.uint8).reshape(shape)
        raise InvalidInputError(
            f"{what}: the image bytes are neither a PNG/JPEG file nor {size} raw pixels ({len(data)} bytes)"
        )
    if kind in ("int64_list", "float_list"):
        values = np.asarray(getattr(feature, kind).value, np.float64 if kind == "float_list" else np.int64)
        if values.size != size:
            raise InvalidInputError(f"{what}: the image feature holds {values.size} values; expected {described}={size}")
        if not np.isfinite(values).all():  # NaN passes the range check below: every comparison with it is false
            raise InvalidInputError(f"{what}: pixel values are NaN or infinite; send finite numbers (0-255)")
        if values.min() < 0 or values.max() > 255:
            raise InvalidInputError(
                f"{what}: pixel values range from {values.min()} to {values.max()}; expected 0-255"
            )
        return np.rint(values).astype(np.uint8).reshape(shape)
    raise InvalidInputError(f"{what}: the image feature is empty; expected int64, float or bytes values")
