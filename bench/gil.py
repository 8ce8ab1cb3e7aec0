"""``python -m bench.gil VERSION_DIR``: a TensorFlow call beside a busy Python thread, in one process.

In the server, TensorFlow runs on an inference thread while the event loop thread runs Python most of the
time. Each time the inference thread comes back from TensorFlow it must take the GIL back, and a thread
that holds it gives it up only every ``sys.getswitchinterval()`` (5 ms by default). This prints the time of
one small signature call (batch 8, the mean batch under 64 single-image callers) with and without one
thread spinning in Python, at two switch intervals: the cost of sharing a process with the event loop,
apart from the cores it takes.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf


def call_ms(version_dir: str, batch: int = 8, rounds: int = 3, calls: int = 300) -> dict[tuple[float, int], float]:
    """Median ms per call for each (switch interval s, spinning threads)."""
    function = tf.saved_model.load(version_dir).signatures["serving_default"]
    (key,) = function.structured_input_signature[1]
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8))
    for _ in range(50):
        function(**{key: images})
    spinning = threading.Event()

    def spin() -> None:
        while spinning.is_set():
            pass

    results = {}
    default = sys.getswitchinterval()
    try:
        for interval in (default, 0.0005):
            sys.setswitchinterval(interval)
            for spinners in (0, 1):
                spinning.set()
                threads = [threading.Thread(target=spin) for _ in range(spinners)]
                for t in threads:
                    t.start()
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    for _ in range(calls):
                        [output.numpy() for output in function(**{key: images}).values()]
                    times.append((time.perf_counter() - started) / calls * 1e3)
                spinning.clear()
                for t in threads:
                    t.join()
                results[(interval, spinners)] = float(np.median(times))
    finally:
        sys.setswitchinterval(default)
    return results


if __name__ == "__main__":
    for (interval, spinners), ms in call_ms(sys.argv[1]).items():
        beside = "beside 1 spinning Python thread" if spinners else "alone"
        print(f"switch interval {interval * 1e3:.1f} ms, batch-8 call {beside:32s} {ms:6.2f} ms")
