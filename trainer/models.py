"""Keras builders for the architectures of ``trainer.architectures``. Preprocessing (uint8 -> [0, 1]) is a layer of
every model, so the exported SavedModel takes raw pixels and training and serving cannot disagree.

Every architecture takes any image size: grayscale ``[N, H, W]`` or colour ``[N, H, W, 3]``. The CNN convolves
over the channels; the MLPs flatten the ``H * W * C`` pixels (so their first layer grows with the image); the
transfer-learning architectures (``trainer.transfer``) put a ``keras.applications`` backbone under a new head.
``augment`` adds random augmentation layers (``trainer.augment``), active in training only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfclassify.trainer.architectures import ArchitectureSpec
from tfclassify.trainer.augment import augmentation
from tfclassify.trainer.data import IMAGE_SHAPE
from tfclassify.trainer.transfer import build_transfer_model


def build_model(spec: ArchitectureSpec, num_classes: int, dropout: float | None = None, l2: float = 0.0,
                input_shape: tuple[int, ...] = IMAGE_SHAPE, augment: Sequence[str] = (), weights: str = "imagenet",
                seed: int | None = None) -> keras.Model:
    """A classifier taking uint8 ``[N, *input_shape]`` (``(H, W)`` grayscale or ``(H, W, C)``): probabilities out,
    or logits for a ``low_level`` spec.

    ``dropout`` replaces the architecture's own rate (ignored by architectures without dropout); ``l2``
    adds weight decay to every dense and convolution kernel (of the head, for transfer learning). ``augment``
    names ``catalog.AUGMENTATIONS`` to add (seeded by ``seed``); ``weights`` is the backbone's ("imagenet",
    "none" or a file: ``transfer.load_backbone``), for transfer learning only.
    """
    if num_classes < 2:
        raise ValueError(f"{spec.name} needs at least 2 classes, got {num_classes}")
    rate = spec.defaults.dropout if dropout is None else dropout
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    if len(input_shape) not in (2, 3):
        raise ValueError(f"{spec.name}: expected an image shape (H, W) or (H, W, C), got {input_shape}")
    if spec.transfer:
        return build_transfer_model(spec, tuple(input_shape), num_classes, rate, regularizer, augment, weights, seed)
    layers = augmentation(augment, (0.0, 1.0), seed)
    model = _BUILDERS[spec.name](tuple(input_shape), num_classes, rate, regularizer, layers)
    model(keras.ops.zeros((1, *input_shape), dtype="uint8"))  # builds the subclassed one too
    return model


def _dense(units: int, regularizer, name: str, activation: str | None = "relu") -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, kernel_regularizer=regularizer, name=name)


def _functional(name: str, shape: tuple[int, ...], layers: list[keras.layers.Layer],
                augment: keras.Layer | None = None) -> keras.Model:
    images = keras.Input(shape, dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(images)
    if augment is not None:
        x = augment(_with_channel_axis(x, shape))  # on [0, 1] pixels; the image layers need a channel axis
    for layer in layers:
        x = layer(x)
    return keras.Model(images, x, name=name)


def _with_channel_axis(x, shape: tuple[int, ...]):
    return keras.layers.Reshape((*shape, 1), name="augment_channel")(x) if len(shape) == 2 else x


def _mlp512(shape: tuple[int, ...], num_classes: int, rate: float | None, regularizer, augment) -> keras.Model:
    return _functional("mlp512", shape, [keras.layers.Flatten(name="flatten"), _dense(512, regularizer, "hidden"),
                                  _dense(num_classes, regularizer, "probabilities", "softmax")], augment)


def _mlp128_dropout(shape: tuple[int, ...], num_classes: int, rate: float | None, regularizer, augment) -> keras.Model:
    return _functional("mlp128_dropout", shape, [keras.layers.Flatten(name="flatten"),
                                                 _dense(128, regularizer, "hidden"),
                                                 keras.layers.Dropout(rate or 0.0, name="dropout"),
                                                 _dense(num_classes, regularizer, "probabilities", "softmax")], augment)


class DeepMLP(keras.Model):
    """500-400-300-200-100 ReLU layers and a softmax, written as a subclassed model as in its tutorial."""

    def __init__(self, num_classes: int, regularizer=None, augment: keras.Layer | None = None, **kwargs) -> None:
        super().__init__(name="mlp_deep", **kwargs)
        self.scale = keras.layers.Rescaling(1.0 / 255, name="scale")
        self.augment = augment
        self.flatten = keras.layers.Flatten(name="flatten")
        self.hidden = [_dense(units, regularizer, f"hidden{i}") for i, units in enumerate((500, 400, 300, 200, 100))]
        self.out = _dense(num_classes, regularizer, "probabilities", "softmax")

    def call(self, images, training=False):
        x = self.scale(images)
        if self.augment is not None:
            x = self.augment(x[..., None] if len(images.shape) == 3 else x, training=training)
        x = self.flatten(x)
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


def _mlp_deep(shape: tuple[int, ...], num_classes: int, rate: float | None, regularizer, augment) -> keras.Model:
    return DeepMLP(num_classes, regularizer, augment)


def _mlp128_256(shape: tuple[int, ...], num_classes: int, rate: float | None, regularizer, augment) -> keras.Model:
    return _functional("mlp128_256", shape, [keras.layers.Flatten(name="flatten"), _dense(128, regularizer, "hidden1"),
                                      _dense(256, regularizer, "hidden2"),
                                      _dense(num_classes, regularizer, "logits", activation=None)], augment)


def _cnn(shape: tuple[int, ...], num_classes: int, rate: float | None, regularizer, augment) -> keras.Model:
    def conv(filters: int, name: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(filters, 3, activation="relu", padding="same", kernel_regularizer=regularizer,
                                   name=name)

    return _functional("cnn", shape, [
        *([keras.layers.Reshape((*shape, 1), name="channel")] if len(shape) == 2 else []),
        conv(32, "conv1"), keras.layers.MaxPooling2D(name="pool1"),
        conv(64, "conv2"), keras.layers.MaxPooling2D(name="pool2"),
        keras.layers.Dropout(rate or 0.0, name="dropout1"),
        keras.layers.Flatten(name="flatten"),
        _dense(128, regularizer, "hidden"),
        keras.layers.Dropout(rate or 0.0, name="dropout2"),
        _dense(num_classes, regularizer, "probabilities", "softmax"),
    ], augment)


_BUILDERS: dict[str, Callable[[tuple[int, ...], int, float | None, object, keras.Layer | None], keras.Model]] = {
    "mlp512": _mlp512,
    "mlp128-dropout": _mlp128_dropout,
    "mlp-deep": _mlp_deep,
    "mlp128-256": _mlp128_256,
    "cnn": _cnn,
}
