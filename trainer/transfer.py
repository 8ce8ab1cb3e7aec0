"""Transfer learning from ``keras.applications``: a pretrained backbone (its own preprocessing inside, taking
0..255 floats) under a new head, trained in two phases as in the Keras transfer-learning guide: the head on
the frozen backbone, then the top of the backbone fine-tuned at a lower learning rate. The backbone is called
with ``training=False``, so its BatchNormalization layers stay in inference mode in both phases (their
statistics were learnt on ImageNet; updating them on a small dataset ruins the features)."""

from __future__ import annotations

import logging
import math
import re
import socket
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import keras

from tfclassify.trainer.architectures import BACKBONE_MIN_SIDE, ArchitectureSpec
from tfclassify.trainer.augment import augmentation

log = logging.getLogger(__name__)

BACKBONE = "backbone"
#: How long a connection to the weights' host may stall before the download fails (a working download of
#: 10-25 MB never waits this long between two reads; an offline machine fails at once or after this).
DOWNLOAD_TIMEOUT_S = 10.0


class WeightsError(ValueError):
    """The backbone's weights could not be downloaded or loaded; the message says what to do instead."""


def build_transfer_model(spec: ArchitectureSpec, shape: tuple[int, ...], num_classes: int, rate: float | None,
                         regularizer, augment: Sequence[str] = (), weights: str = "imagenet",
                         seed: int | None = None) -> keras.Model:
    """uint8 ``[N, *shape]`` in (``(H, W)`` or ``(H, W, C)``), probabilities out. Grey images are repeated to
    three channels and images under 32 pixels a side resized up, inside the model, so any of our data fits."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    size = (max(height, BACKBONE_MIN_SIDE), max(width, BACKBONE_MIN_SIDE))
    backbone = load_backbone(spec, (*size, 3), weights)
    images = keras.Input(shape, dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0, name="to_float")(images)  # uint8 -> float32 0..255, what the backbone takes
    if len(shape) == 2:
        x = keras.layers.Reshape((height, width, 1), name="channel")(x)
    layers = augmentation(augment, (0.0, 255.0), seed)
    if layers is not None:
        x = layers(x)
    if channels == 1:
        x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
    if size != (height, width):
        x = keras.layers.Resizing(*size, interpolation="bilinear", name="resize")(x)
    x = backbone(x, training=False)  # BatchNormalization in inference mode, frozen or fine-tuned
    x = keras.layers.Dropout(rate or 0.0, name="dropout")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer,
                             name="probabilities")(x)
    return keras.Model(images, out, name=spec.name)


def load_backbone(spec: ArchitectureSpec, shape: tuple[int, int, int], weights: str) -> keras.Model:
    """``keras.applications.<backbone>`` without its top, average-pooled, with ``weights``: "imagenet"
    (downloaded by Keras into ``~/.keras/models`` once), "none" (random), or a ``.weights.h5``/``.h5`` file of
    that backbone built with ``include_top=False`` (``backbone.save_weights(FILE)``, or Keras' own
    ``*_notop.h5`` download)."""
    backbone = spec.backbone
    if backbone is None:
        raise ValueError(f"{spec.name} is not a transfer-learning architecture: it has no backbone")
    application = getattr(keras.applications, backbone)
    source = {"imagenet": "imagenet", "none": None}.get(weights, weights)
    build = {"include_top": False, "weights": source, "input_shape": shape, "pooling": "avg",
             "include_preprocessing": True, "name": BACKBONE}
    if weights == "imagenet":
        # Keras warns that weights for other sizes than 224 are those of 224: true, and what we mean.
        with _download_timeout(DOWNLOAD_TIMEOUT_S), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                return application(**build)
            except Exception as exc:  # Keras raises a bare Exception for a failed download
                raise WeightsError(_download_message(backbone, exc)) from exc
    if source is not None and not Path(source).is_file():
        raise WeightsError(f"--weights {source}: no such file")
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it cannot match before it raises
            warnings.simplefilter("ignore")
            return application(**build)
    except (ValueError, OSError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load {source} as the weights of {spec.backbone} (include_top=False): "
                           f"{first}") from exc


def _download_message(backbone: str, exc: Exception) -> str:
    match = re.match(r"URL fetch failure on (\S+): (.*)", str(exc), re.S)
    url, reason = (match.group(1), match.group(2)) if match else ("keras.applications' weights URL", str(exc))
    reason = reason.split(" -- ", 1)[-1].strip().splitlines()[0] if reason.strip() else type(exc).__name__
    return (f"cannot download the ImageNet weights of {backbone} ({url}): {reason}; train with --weights none "
            "or --weights FILE")


@contextmanager
def _download_timeout(seconds: float):
    """Keras downloads with ``urlretrieve``, which has no timeout of its own: bound every socket operation."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE)


def freeze(model: keras.Model) -> None:
    """Phase 1: only the head (and nothing of the backbone) trains."""
    backbone_of(model).trainable = False


def unfreeze_top(model: keras.Model, layers: int) -> list[str]:
    """Phase 2: the top ``layers`` layers of the backbone (0: all) become trainable, BatchNormalization
    layers excepted; returns the names of the unfrozen layers that hold weights, bottom to top."""
    backbone = backbone_of(model)
    backbone.trainable = True
    cut = 0 if layers <= 0 else max(0, len(backbone.layers) - layers)
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
    return [layer.name for layer in backbone.layers[cut:] if layer.trainable and layer.weights]


def trainable_parameters(model: keras.Model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))
