"""In-process baseline: the model called directly, in one thread, the fastest way this process knows:
the server's own runtime (``ModelRuntime.run``: the SavedModel's graph in a session), without gRPC,
queues or threads between the caller and TensorFlow.

Usage: python -m bench.inprocess VERSION_DIR [BATCH_SIZE ...]  -> one JSON line
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tfclassify.server.runtime.model_runtime import load_runtime
from tfclassify.server.runtime.repository import VersionDir

BATCH_SIZES = (1, 64, 256, 1024, 4096)


def measure(version_dir: str, batch_sizes: tuple[int, ...] = BATCH_SIZES, seconds_per_size: float = 1.5) -> dict:
    path = Path(version_dir)
    runtime = load_runtime(VersionDir(path.parent.name, int(path.name), path))
    rng = np.random.default_rng(0)
    throughput, latency_batch1 = {}, []
    for size in batch_sizes:
        # uint8 pixels of the model's size, as the queue holds them (float models: preprocessed once, here).
        images = runtime.as_model_input(rng.integers(0, 256, (size, *runtime.image_shape), dtype=np.uint8))
        for _ in range(5):
            runtime.run(images)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds_per_size:
            t0 = time.perf_counter()
            runtime.run(images)
            if size == 1:
                latency_batch1.append(time.perf_counter() - t0)
            calls += 1
        throughput[size] = calls * size / (time.perf_counter() - started)
    best = max(throughput, key=throughput.get)
    return {
        "images_per_second": throughput,
        "best_batch_size": best,
        "best_images_per_second": throughput[best],
        "batch1_p50_ms": float(np.percentile(latency_batch1, 50) * 1e3) if latency_batch1 else None,
    }


if __name__ == "__main__":
    sizes = tuple(int(a) for a in sys.argv[2:]) or BATCH_SIZES
    print(json.dumps(measure(sys.argv[1], sizes)))
