"""Prometheus metrics of the server, on a registry passed in (never the global one)."""

from __future__ import annotations


from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from tfclassify.client.version import package_version

# Request latency: from 0.5 ms (a single image on an idle CPU) to 10 s
# (a maximal batch on a slow machine), roughly doubling.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5, 5.0, 10.0)
# Images per TensorFlow call: powers of two up to the largest batches we allow.
BATCH_BUCKETS = tuple(float(2**i) for i in range(15))

MODEL_STATES = ("LOADING", "AVAILABLE", "UNLOADING", "FAILED")


class ServerMetrics:
    """Every metric the server exports, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "tfclassify_requests",
            "RPCs answered, by API, method, model, version and gRPC status code.",
            ["api", "method", "model", "version", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "tfclassify_request_duration_seconds",
            "Time from receiving an RPC to answering it.",
            ["api", "method", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "tfclassify_inference_duration_seconds",
            "Time of one TensorFlow call.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "tfclassify_batch_size_images",
            "Images per TensorFlow call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.images = Counter(
            "tfclassify_images_classified",
            "Images classified.",
            ["model", "version"],
            registry=registry,
        )
        self.model_state = Gauge(
            "tfclassify_model_version_state",
            "1 for the state each model version is in (LOADING, AVAILABLE, UNLOADING, FAILED), else 0.",
            ["model", "version", "state"],
            registry=registry,
        )
        self.model_load_duration = Gauge(
            "tfclassify_model_load_duration_seconds",
            "How long loading (and checking) each model version took.",
            ["model", "version"],
            registry=registry,
        )
        self.model_load_failures = Counter(
            "tfclassify_model_load_failures",
            "Model versions that failed to load.",
            ["model"],
            registry=registry,
        )
        self.build_info = Info("tfclassify_build", "Version of the tfclassify server.", registry=registry)
        self.build_info.info({"version": package_version()})

    def set_model_state(self, model: str, version: int, state: str) -> None:
        """Mark ``state`` as the one state of (model, version)."""
        for s in MODEL_STATES:
            self.model_state.labels(model, str(version), s).set(1 if s == state else 0)
