"""``--augment``: Keras preprocessing layers that are part of the model. They change images only when the model
is called with ``training=True`` (``fit``); at inference, exported signature included, they pass images
through unchanged, so a model gives the same answers with or without them."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfclassify.trainer.architectures import AUGMENTATIONS


def augmentation(names: Sequence[str], value_range: tuple[float, float],
                 seed: int | None = None) -> keras.Sequential | None:
    """The layers ``names`` choose (``AUGMENTATIONS``), in the catalog's order, for images whose pixels span
    ``value_range`` and have a channel axis; None when ``names`` is empty."""
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"--augment: unknown {', '.join(unknown)}: expected some of {', '.join(AUGMENTATIONS)}")
    layers = []
    for name, (layer, settings) in AUGMENTATIONS.items():
        if name in names:
            extra = {"value_range": value_range} if layer == "RandomContrast" else {}
            layers.append(getattr(keras.layers, layer)(**settings, **extra, seed=seed, name=f"random_{name}"))
    return keras.Sequential(layers, name="augmentation") if layers else None


def describe(names: Sequence[str]) -> list[dict]:
    """The chosen layers and their settings, for the model card."""
    return [{"name": name, "layer": layer, **settings} for name, (layer, settings) in AUGMENTATIONS.items()
            if name in names]
