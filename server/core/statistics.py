"""Per model version request and batch statistics, kept as Triton's ``ModelStatistics`` reports them.

Counts and cumulative nanoseconds since the version loaded. Prometheus has
the same information as histograms; these exist for the Open Inference
Protocol's ``ModelStatistics`` RPC, which tools such as ``perf_analyzer``
read to split latency into queue and compute time. Only the event-loop
thread updates them, so there is no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """How many times something happened and how long it took in all."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class InferenceStatistics:
    """Statistics of one model version.

    Per request: ``success``/``fail`` (the whole request), ``queue`` (time in
    the batching queue), ``compute_input`` (validating and converting the
    input), ``compute_infer`` (the TensorFlow call of the request's batch)
    and ``compute_output`` (building the answer). Per batch size:
    ``batches[size]`` (TensorFlow calls and their time).
    """

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    #: Images classified (Triton's ``inference_count``).
    inference_count: int = 0
    #: TensorFlow calls (Triton's ``execution_count``).
    execution_count: int = 0
    #: Wall-clock milliseconds since the epoch of the last successful request (0: none yet).
    last_inference_ms: int = 0
    batches: dict[int, Duration] = field(default_factory=dict)

    def record_batch(self, images: int, seconds: float) -> None:
        """One TensorFlow call over ``images`` images."""
        self.execution_count += 1
        self.batches.setdefault(images, Duration()).add(int(seconds * 1e9))

    def record_success(
        self, images: int, total_ns: int, input_ns: int, queue_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One request answered. Every per-request duration is recorded here, at the
        end, so that readers (perf_analyzer) always see equal counts."""
        self.success.add(total_ns)
        self.compute_input.add(input_ns)
        self.queue.add(queue_ns)
        self.compute_infer.add(infer_ns)  # the whole TensorFlow call of the request's batch
        self.compute_output.add(output_ns)
        self.inference_count += images
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, total_ns: int) -> None:
        self.fail.add(total_ns)
