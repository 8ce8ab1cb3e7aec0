"""Writes the colour benchmark's two models into a repository (run in a process of its own: TensorFlow).

- ``cnn32``: a Keras CNN taking uint8 ``[N, 32, 32, 3]`` (rescaling inside; two 3x3 conv + pool blocks of 32 and 64
  filters, dense 128, 10 classes), exported with ``Model.export()``;
- ``mobilenet224``: ``keras.applications.MobileNetV3Small`` at ``[N, 224, 224, 3]`` (float 0..255, rescaled inside),
  10 classes, ``weights=None`` (speed does not depend on the weights), with ``{"preprocessing": {"scale": 1.0}}``.

Usage: python -m bench.colour_models REPO
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras

CLASSES = 10


def cnn32() -> keras.Model:
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x), name="cnn32")


def mobilenet224() -> keras.Model:
    return keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, classes=CLASSES)


def main() -> None:
    repo = Path(sys.argv[1])
    keras.utils.set_random_seed(0)
    for name, build, metadata in (("cnn32", cnn32, {}), ("mobilenet224", mobilenet224,
                                                          {"preprocessing": {"scale": 1.0}})):
        version = repo / name / "1"
        build().export(str(version), verbose=False)
        (version / "labels.txt").write_text("".join(f"class{i}\n" for i in range(CLASSES)))
        if metadata:
            (version / "tfclassify.json").write_text(json.dumps(metadata))


if __name__ == "__main__":
    main()
