"""Choosing the TensorFlow device models run on."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def configure_gpus() -> None:
    """Let TensorFlow grow GPU memory as needed instead of taking it all at start.

    Must run before TensorFlow initialises the GPUs (before any op runs).
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: keep TensorFlow's setting
            log.warning("cannot enable memory growth on %s: %s", gpu.name, exc)


def resolve_device(choice: str) -> str:
    """The TensorFlow device name for ``--device`` (``auto``, ``cpu`` or ``gpu:N``)."""
    gpus = tf.config.list_logical_devices("GPU")
    choice = choice.strip().lower()
    if choice == "auto":
        return gpus[0].name if gpus else "/device:CPU:0"
    if choice == "cpu":
        return "/device:CPU:0"
    if choice.startswith("gpu:") and choice[4:].isdigit():
        index = int(choice[4:])
        if index >= len(gpus):
            raise ValueError(f"--device {choice}: TensorFlow sees {len(gpus)} GPU(s)")
        return gpus[index].name
    raise ValueError(f"--device {choice!r}: expected auto, cpu or gpu:N")
