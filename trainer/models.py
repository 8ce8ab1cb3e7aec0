"""Keras architectures. Preprocessing (uint8 -> [0, 1]) is a layer of the model,
so the exported SavedModel takes raw pixels and training and serving cannot disagree."""

from __future__ import annotations

import keras

IMAGE_SHAPE = (28, 28)


def build_model(arch: str, num_classes: int) -> keras.Model:
    """A compiled-ready classifier taking uint8 ``[N, 28, 28]`` and returning probabilities."""
    builders = {"mlp": _mlp}
    if arch not in builders:
        raise ValueError(f"unknown architecture {arch!r}: expected one of {', '.join(builders)}")
    return builders[arch](num_classes)


def _mlp(num_classes: int) -> keras.Model:
    """The 784-512-10 multilayer perceptron of the TensorFlow/Keras tutorials."""
    images = keras.Input(IMAGE_SHAPE, dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(images)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(512, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(images, probabilities, name="mlp")
