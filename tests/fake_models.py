"""Stand-ins for a loaded TensorFlow model, for the unit tests of the serving core (data plane, registry, manager):
``FakeRuntime`` has the attributes of ``ModelRuntime`` that the core reads, and runs a "model" that predicts
class ``first pixel mod classes`` with probability 1; ``served_version`` wraps one in a batching queue."""

from __future__ import annotations

from concurrent.futures import Executor
from types import SimpleNamespace

import numpy as np
from prometheus_client import CollectorRegistry

from tfclassify.server.core.batching import Batcher, BatchingOptions, Replica
from tfclassify.server.core.metrics import ServerMetrics
from tfclassify.server.core.registry import ServedVersion


class FakeRuntime:
    """A model version on one device: ``image_shape`` (height, width, channels) of uint8 (or float) pixels."""

    def __init__(self, name: str = "m", version: int = 1, shape: tuple[int, int, int] = (4, 4, 1),
                 labels: tuple[str, ...] = ("zero", "one", "two"), takes_float: bool = False,
                 takes_encoded: bool = False, file_spec: object = None, device: str = "/CPU:0") -> None:
        self.name, self.version, self.device = name, version, device
        self.image_shape = shape
        self.labels = list(labels)
        self.num_classes = len(labels)
        self.mean_label_bytes = max(len(label) for label in labels)
        self.takes_float, self.takes_encoded = takes_float, takes_encoded
        self.file_spec = file_spec
        self.output_key = "probabilities"
        self.outputs = {"probabilities": None}
        self.input_dtype = SimpleNamespace(name="float32" if takes_float else "uint8",
                                           as_numpy_dtype=np.float32 if takes_float else np.uint8)
        self.input_shape = [None, *shape]
        self.output_kind, self.runtime_kind, self.xla_batch_sizes = "probabilities", "session", ()
        self.batches: list[int] = []  # the size of each batch run
        self.closed = False

    def as_model_input(self, images: np.ndarray) -> np.ndarray:
        return images

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return outputs["probabilities"]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(len(images))
        classes = images.reshape(len(images), -1)[:, 0].astype(np.int64) % self.num_classes
        return {"probabilities": np.eye(self.num_classes, dtype=np.float32)[classes]}

    def compile_small_batches(self, max_batch_size: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def served_version(runtime: FakeRuntime, executor: Executor, metrics: ServerMetrics | None = None,
                   **options) -> ServedVersion:
    """``runtime`` served: one replica, a queue of ``options`` (8-image batches, 16 queued by default)."""
    metrics = metrics or ServerMetrics(CollectorRegistry())
    version_metrics = metrics.for_version(runtime.name, runtime.version, runtime.labels, [runtime.device])
    batching = BatchingOptions(**{"max_batch_size": 8, "max_enqueued_images": 16, "max_concurrent_batches": 1,
                                  **options})
    batcher = Batcher(f"{runtime.name}:{runtime.version}", [Replica(runtime.device, runtime.run)], batching,
                      executor, version_metrics.observer())
    return ServedVersion([runtime], batcher, version_metrics)  # type: ignore[list-item]
