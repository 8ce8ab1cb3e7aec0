"""Which devices a run trains on: one, or ``tf.distribute.MirroredStrategy`` over several (each device holds a
copy of the weights, works on its share of every batch, and the gradients are summed across them)."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def split_cpu(n: int) -> None:
    """Make ``n`` logical CPU devices (``CPU:0`` .. ``CPU:n-1``); must run before TensorFlow uses a device."""
    if n <= 1:
        return
    [cpu] = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def choose_strategy(devices: str) -> tf.distribute.Strategy:
    """``auto``: mirrored over every visible GPU when there are two or more, else the default (one device);
    ``one``: the default; otherwise a comma-separated device list (``GPU:0,GPU:1``, ``CPU:0,CPU:1``) to mirror
    over. A listed device that does not exist is an error, not a silent fallback."""
    if devices == "one":
        return tf.distribute.get_strategy()
    if devices == "auto":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if len(gpus) < 2:
            log.info("training on one device (%s)", gpus[0] if gpus else "CPU")
            return tf.distribute.get_strategy()
        names = gpus
    else:
        wanted = [d.strip() for d in devices.split(",") if d.strip()]
        present = {d.name.split("device:")[-1].upper(): d.name for d in tf.config.list_logical_devices()}
        missing = [d for d in wanted if d.upper() not in present]
        if missing:
            raise ValueError(f"--devices: no device {missing[0]} here (devices: {', '.join(sorted(present))})")
        names = [present[d.upper()] for d in wanted]
    if len(names) == 1:
        return tf.distribute.OneDeviceStrategy(names[0])
    log.info("training mirrored over %s", ", ".join(names))
    return tf.distribute.MirroredStrategy(names)


def strategy_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """The devices ``strategy`` trains on (the default strategy: the first GPU, else the CPU)."""
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy does not list its one device
        gpus = tf.config.list_logical_devices("GPU")
        return [(gpus[0] if gpus else tf.config.list_logical_devices("CPU")[0]).name]
