"""Devices models run on: GPU memory settings, logical CPU devices, and ``--device``."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """TensorFlow's thread pools (0 keeps TensorFlow's default); must run before any op."""
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def configure_devices(logical_cpu_devices: int = 1, gpu_memory_limit_mb: int = 0) -> None:
    """Set up devices before TensorFlow initialises them (before any op runs).

    GPUs get memory growth (TensorFlow otherwise takes all GPU memory at
    start) or, with ``gpu_memory_limit_mb``, a fixed per-process limit. The
    CPU can be split into ``logical_cpu_devices`` logical devices, so that
    replica dispatch runs (and is tested) on machines without GPUs.
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            if gpu_memory_limit_mb > 0:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_limit_mb)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: keep TensorFlow's setting
            log.warning("cannot configure %s: %s", gpu.name, exc)
    if logical_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpu_devices)]
        )


def resolve_devices(choice: str) -> list[str]:
    """TensorFlow device names for ``--device``; one model replica runs on each.

    ``auto``: every GPU, or the CPU when there is none. ``gpu``: every GPU.
    ``cpu``: the (first) CPU. ``cpu:all``: every logical CPU device.
    ``gpu:N`` / ``cpu:N``: one device. A comma-separated list names several.
    """
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    devices: list[str] = []
    for part in (p.strip().lower() for p in choice.split(",") if p.strip()):
        if part == "auto":
            devices += gpus or cpus[:1]
        elif part == "gpu":
            if not gpus:
                raise ValueError("--device gpu: TensorFlow sees no GPU (is the CUDA build installed?)")
            devices += gpus
        elif part == "cpu":
            devices += cpus[:1]
        elif part == "cpu:all":
            devices += cpus
        elif part[:4] in ("gpu:", "cpu:") and part[4:].isdigit():
            pool, index = (gpus if part.startswith("gpu") else cpus), int(part[4:])
            if index >= len(pool):
                raise ValueError(f"--device {part}: TensorFlow sees {len(pool)} {part[:3].upper()} device(s)")
            devices.append(pool[index])
        else:
            raise ValueError(f"--device {part!r}: expected auto, cpu, cpu:all, cpu:N, gpu or gpu:N")
    if not devices:
        raise ValueError(f"--device {choice!r} names no device")
    return list(dict.fromkeys(devices))
