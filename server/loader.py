"""Loads the model repository's versions into the registry, reporting each state."""

from __future__ import annotations

import logging
from pathlib import Path

from tfclassify.server.errors import ModelLoadError
from tfclassify.server.metrics import ServerMetrics
from tfclassify.server.registry import ModelRegistry
from tfclassify.server.repository import scan_repository
from tfclassify.server.runtime import load_runtime

log = logging.getLogger(__name__)


def load_repository(repo: Path, registry: ModelRegistry, metrics: ServerMetrics, device: str) -> dict[str, str]:
    """Load the latest loadable version of every model in ``repo``.

    A version that fails to load is logged and counted, and the next older
    version is tried, so one broken export never takes a model down.
    Returns the models that have no loadable version, with the reason.
    """
    failures: dict[str, str] = {}
    models = scan_repository(repo)
    for name in models:
        registry.declare(name)
    for name, versions in models.items():
        if not versions:
            failures[name] = f"{repo / name} holds no version folder with a SavedModel"
            log.error("model %s: %s", name, failures[name])
            continue
        for version_dir in reversed(versions):
            metrics.set_model_state(name, version_dir.version, "LOADING")
            try:
                runtime = load_runtime(version_dir, device)
            except ModelLoadError as exc:
                metrics.set_model_state(name, version_dir.version, "FAILED")
                metrics.model_load_failures.labels(name).inc()
                log.error("model %s version %d failed to load: %s", name, version_dir.version, exc)
                failures[name] = str(exc)
                continue
            registry.add(runtime)
            failures.pop(name, None)
            metrics.set_model_state(name, runtime.version, "AVAILABLE")
            metrics.model_load_duration.labels(name, str(runtime.version)).set(runtime.load_seconds)
            log.info(
                "model %s version %d loaded on %s in %.2f s (%s input %s, %d classes, %s)",
                name, runtime.version, runtime.device, runtime.load_seconds, runtime.input_dtype.name,
                list(runtime.input_shape), runtime.num_classes, runtime.output_kind,
            )
            break
    return failures
