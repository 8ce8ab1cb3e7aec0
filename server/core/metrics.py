"""Prometheus metrics of the server, on a registry passed in (never the global one).

Hot-path children (``labels(...)`` results) are cached: a label lookup costs
microseconds, and a busy server records several per request.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from tfclassify.common.version import package_version
from tfclassify.server.core.batching import Batcher, BatchObserver, Replica
from tfclassify.server.core.feedback import count_truth
from tfclassify.server.core.statistics import InferenceStatistics

# Request latency: from 0.25 ms (a single image on an idle CPU) to 10 s (a
# maximal batch on a slow machine), roughly doubling.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5, 5.0, 10.0,
)
# Images per TensorFlow call: powers of two up to the largest batches we allow.
BATCH_BUCKETS = tuple(float(2**i) for i in range(15))

MODEL_STATES = ("LOADING", "AVAILABLE", "UNLOADING", "FAILED")


class ServerMetrics:
    """Every metric the server exports, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_* (CPU seconds, resident memory, open file descriptors, start time), python_info, python_gc_*.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.requests = Counter(
            "tfclassify_requests", "RPCs answered, by API, method, model, version and gRPC status code.",
            ["api", "method", "model", "version", "code"], registry=registry,
        )
        self.request_duration = Histogram(
            "tfclassify_request_duration_seconds", "Time from receiving an RPC to answering it.",
            ["api", "method", "model"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.requests_in_flight = Gauge(
            "tfclassify_requests_in_flight", "RPCs received and not yet answered.", ["api", "method"], registry=registry
        )
        self.queue_wait = Histogram(
            "tfclassify_queue_wait_seconds", "Time a request's images waited in the batching queue.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.inference_duration = Histogram(
            "tfclassify_inference_duration_seconds", "Time of one TensorFlow call (one batch).",
            ["model", "version", "device"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "tfclassify_batch_size_images", "Images per TensorFlow call.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=registry,
        )
        self.queued_images = Gauge(
            "tfclassify_queued_images", "Images waiting in the batching queue.", ["model", "version"], registry=registry
        )
        self.batches_in_flight = Gauge(
            "tfclassify_batches_in_flight", "TensorFlow calls running.", ["model", "version"], registry=registry
        )
        self.images = Counter(
            "tfclassify_images_classified", "Images classified.", ["model", "version"], registry=registry
        )
        self.predictions = Counter(
            "tfclassify_predictions", "Images classified, by predicted class (watch the mix shift).",
            ["model", "version", "class"], registry=registry,
        )
        # Live accuracy: images whose true class the caller gave (with the request, or later by Feedback).
        # Series appear only for versions that receive labels; "class" is the true class (49 for Kuzushiji-49).
        self.labelled_images = Counter(
            "tfclassify_labelled_images", "Classified images whose true class the caller gave, by true class.",
            ["model", "version", "class"], registry=registry,
        )
        self.correct_images = Counter(
            "tfclassify_correct_images", "Labelled images the version classified correctly, by true class.",
            ["model", "version", "class"], registry=registry,
        )
        self.replica_info = Gauge(
            "tfclassify_model_replica_info",
            "1 for each device holding a replica of a model version, and how it runs (session or function).",
            ["model", "version", "device", "runtime"], registry=registry,
        )
        self.model_state = Gauge(
            "tfclassify_model_version_state",
            "1 for the state each model version is in (LOADING, AVAILABLE, UNLOADING, FAILED), else 0.",
            ["model", "version", "state"], registry=registry,
        )
        self.model_load_duration = Gauge(
            "tfclassify_model_load_duration_seconds", "How long loading, checking and warming up each version took.",
            ["model", "version"], registry=registry,
        )
        self.model_load_failures = Counter(
            "tfclassify_model_load_failures", "Model versions that failed to load.", ["model"], registry=registry
        )
        self.config_errors = Counter(
            "tfclassify_model_config_errors", "Times the model config file could not be applied.", registry=registry
        )
        self.large_request_bytes = Gauge(
            "tfclassify_large_request_bytes_in_progress",
            "Bytes of large request messages (1 MiB or more) being decoded and answered.", registry=registry,
        )
        self.large_requests_refused = Counter(
            "tfclassify_large_requests_refused",
            "Large requests refused (RESOURCE_EXHAUSTED) before decoding: --max-request-bytes-in-progress was held.",
            registry=registry,
        )
        self.undelivered_answers = Counter(
            "tfclassify_undelivered_answers",
            "Answers gRPC could not send because the client had gone away (cancelled, deadline passed, disconnected).",
            registry=registry,
        )
        self.http_malformed_requests = Counter(
            "tfclassify_http_malformed_requests",
            "HTTP requests the HTTP parser refused (request line, headers or framing): answered 400 before any API "
            "saw them.",
            registry=registry,
        )
        self.build_info = Info("tfclassify_build", "Version of the tfclassify server.", registry=registry)
        self.build_info.info({"version": package_version()})
        self._request_children: dict[tuple[str, ...], tuple] = {}
        self._in_flight_counts: dict[tuple[str, str], list[int]] = {}
        # Kept across batching-setting changes (new VersionMetrics, same version); dropped on unload.
        self._statistics: dict[tuple[str, str], InferenceStatistics] = {}

    def observe_request(self, api: str, method: str, model: str, version: str, code: str, seconds: float) -> None:
        """Count one answered RPC and its duration."""
        key = (api, method, model, version, code)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.request_duration.labels(api, method, model))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def in_flight_count(self, api: str, method: str) -> list[int]:
        """The one-element list holding how many RPCs of (api, method) are being answered: the caller adds and
        subtracts in it, and ``tfclassify_requests_in_flight`` reads it at each scrape (no metric call per RPC)."""
        count = self._in_flight_counts.get((api, method))
        if count is None:
            count = self._in_flight_counts[(api, method)] = [0]
            self.requests_in_flight.labels(api, method).set_function(lambda: count[0])
        return count

    def set_model_state(self, model: str, version: int, state: str | None) -> None:
        """Mark ``state`` as the one state of (model, version); None removes the version's series."""
        for s in MODEL_STATES:
            if state is None:
                _remove(self.model_state, model, str(version), s)
            else:
                self.model_state.labels(model, str(version), s).set(1 if s == state else 0)

    def for_version(self, model: str, version: int, labels: list[str], devices: list[str],
                    runtime: str = "session") -> VersionMetrics:
        """The cached children of one served version (``runtime``: how it runs, "session" or "function")."""
        return VersionMetrics(self, model, str(version), labels, devices, runtime)

    def statistics(self, model: str, version: int) -> InferenceStatistics | None:
        """The request statistics of a loaded version (None: not loaded)."""
        return self._statistics.get((model, str(version)))


class VersionMetrics:
    """Metric children of one model version, and the batcher's observer feeding them."""

    def __init__(self, m: ServerMetrics, model: str, version: str, labels: list[str], devices: list[str],
                 runtime: str = "session") -> None:
        self._m, self._key, self._runtime = m, (model, version), runtime
        self.statistics = m._statistics.setdefault((model, version), InferenceStatistics())
        self._images = m.images.labels(model, version)
        self._predictions = [m.predictions.labels(model, version, label) for label in labels]
        self._labels = labels
        self._truth: list[tuple] | None = None
        self._batch_size = m.batch_size.labels(model, version)
        self._queue_wait = m.queue_wait.labels(model, version)
        self._queued = m.queued_images.labels(model, version)
        self._in_flight = m.batches_in_flight.labels(model, version)
        self._inference = {d: m.inference_duration.labels(model, version, d) for d in devices}
        for d in devices:
            m.replica_info.labels(model, version, d, runtime).set(1)
        self._devices = devices

    def watch(self, batcher: Batcher) -> None:
        """Report ``batcher``'s queued images and running batches, read at each scrape (the batcher of a changed
        configuration takes over the version's series from the one before)."""
        self._queued.set_function(lambda: batcher.queued_images)
        self._in_flight.set_function(lambda: batcher.batches_in_flight)

    def count_truth(self, true: np.ndarray, predicted: np.ndarray) -> tuple[int, int]:
        """Count labelled images (``true`` -1: unknown, left out) and the correct ones; returns both totals."""
        if self._truth is None:  # children made on first use: no series for versions that never get labels
            m, (model, version) = self._m, self._key
            self._truth = [(m.labelled_images.labels(model, version, label), m.correct_images.labels(model, version, label))
                           for label in self._labels]
        labelled, correct = count_truth(true, predicted, len(self._labels))
        for index in np.flatnonzero(labelled).tolist():
            self._truth[index][0].inc(int(labelled[index]))
            if correct[index]:
                self._truth[index][1].inc(int(correct[index]))
        return int(labelled.sum()), int(correct.sum())

    def count_predictions(self, classes: np.ndarray) -> None:
        """Count a request's images by predicted class."""
        self._images.inc(len(classes))
        if len(classes) == 1:
            self._predictions[int(classes[0])].inc()
            return
        for index, count in enumerate(np.bincount(classes, minlength=len(self._predictions)).tolist()):
            if count:
                self._predictions[index].inc(count)

    def observer(self) -> BatchObserver:
        statistics = self.statistics

        def on_batch(replica: Replica, size: int, seconds: float) -> None:
            self._batch_size.observe(size)
            self._inference[replica.device].observe(seconds)
            statistics.record_batch(size, seconds)

        return BatchObserver(on_batch=on_batch, on_queue_wait=self._queue_wait.observe)

    def remove(self) -> None:
        """Drop the per-version gauges of an unloaded version (counters and histograms stay)."""
        m, (model, version) = self._m, self._key
        m._statistics.pop(self._key, None)
        _remove(m.queued_images, model, version)
        _remove(m.batches_in_flight, model, version)
        for d in self._devices:
            _remove(m.replica_info, model, version, d, self._runtime)


def _remove(metric, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
