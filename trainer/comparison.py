"""``tfclassify train --compare``: several architectures trained on the same data, side by side."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfclassify.trainer.architectures import architecture
from tfclassify.trainer.config import TrainConfig
from tfclassify.trainer.data import TrainingData, load_training_data
from tfclassify.trainer.train import TrainResult, train


@dataclass(frozen=True)
class Comparison:
    """One architecture's row."""

    arch: str
    result: TrainResult
    #: Images per second through the exported SavedModel's serving signature, batches of 1,024, in process.
    images_per_second: float


def compare(config: TrainConfig, archs: list[str], data: TrainingData | None = None,
            measure_seconds: float = 2.0) -> list[Comparison]:
    """Train ``config`` once per architecture (each exported as model ``<name>-<arch>``) on the same data;
    each exported model's inference speed is measured for ``measure_seconds``."""
    names = [architecture(a).name for a in archs]  # unknown names fail before anything is trained
    data = data or load_training_data(config.source)
    rows = []
    for arch in names:
        run = dataclasses.replace(config, arch=arch, model_name=f"{config.name}-{arch}")
        result = train(run, data)
        rows.append(Comparison(arch, result, _images_per_second(result, data.x_test, seconds=measure_seconds)))
    return rows


def _images_per_second(result: TrainResult, test_images: np.ndarray, batch: int = 1024, seconds: float = 2.0) -> float:
    serve = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    images = test_images[:batch]
    images = tf.constant(np.resize(images, (batch, *images.shape[1:])))
    serve(images=images)  # traced and warm
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        serve(images=images)
        done += batch
    return done / (time.perf_counter() - started)


def comparison_table(rows: list[Comparison]) -> str:
    """A Markdown table of the comparison."""
    lines = ["| architecture | test accuracy | parameters | epochs | s per epoch | inference images/s | version |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row.result
        lines.append(f"| {row.arch} | {r.test_accuracy:.4f} | {r.parameters:,} | {r.card['training']['epochs_run']} | "
                     f"{r.seconds_per_epoch:.1f} | {row.images_per_second:,.0f} | {r.version_dir} |")
    return "\n".join(lines)
