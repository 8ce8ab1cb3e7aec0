"""The model versions being served, by name and version; resolves a request's ``ModelSpec``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tfclassify.server.core.batching import Batcher
from tfclassify.server.core.errors import ModelNotFoundError, ModelUnavailableError, VersionLabelNotFoundError
from tfclassify.server.core.metrics import VersionMetrics

if TYPE_CHECKING:  # a type only: the registry (and what uses it) imports without TensorFlow
    from tfclassify.server.runtime.model_runtime import ModelRuntime


@dataclass(eq=False)
class ServedVersion:
    """An available model version: its replicas (one per device), its batching queue and metrics."""

    replicas: list[ModelRuntime]
    batcher: Batcher
    metrics: VersionMetrics
    #: The version number as the metrics label it (computed once, not per request).
    version_label: str = field(init=False)

    def __post_init__(self) -> None:
        self.version_label = str(self.replicas[0].version)

    @property
    def runtime(self) -> ModelRuntime:
        """The first replica: the version's metadata (name, labels, input shape ...)."""
        return self.replicas[0]

    @property
    def devices(self) -> list[str]:
        return [r.device for r in self.replicas]


class ModelRegistry:
    """Served versions. Readers never lock: writers replace the whole mapping
    (copy on write), so a request sees one consistent snapshot."""

    def __init__(self) -> None:
        self._models: dict[str, dict[int, ServedVersion]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._write_lock = threading.Lock()

    def declare(self, name: str) -> None:
        """Make ``name`` known before any version has loaded (requests get UNAVAILABLE, not NOT_FOUND)."""
        with self._write_lock:
            if name not in self._models:
                self._models = {**self._models, name: {}}

    def forget(self, name: str) -> None:
        """Stop knowing ``name`` (removed from the repository or the config)."""
        with self._write_lock:
            self._models = {k: v for k, v in self._models.items() if k != name}
            self._labels = {k: v for k, v in self._labels.items() if k != name}

    def add(self, served: ServedVersion) -> None:
        """Start serving a version."""
        name, version = served.runtime.name, served.runtime.version
        with self._write_lock:
            versions = {**self._models.get(name, {}), version: served}
            self._models = {**self._models, name: dict(sorted(versions.items()))}

    def remove(self, name: str, version: int) -> ServedVersion | None:
        """Stop routing requests to a version; returns it (to drain its queue)."""
        with self._write_lock:
            versions = dict(self._models.get(name, {}))
            served = versions.pop(version, None)
            if name in self._models:
                self._models = {**self._models, name: versions}
        return served

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Set the version labels (``stable`` -> 3, ...) of model ``name``."""
        with self._write_lock:
            self._labels = {**self._labels, name: dict(labels)}

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def names(self) -> list[str]:
        return sorted(self._models)

    def has(self, name: str) -> bool:
        """Whether ``name`` is a model of the repository (loaded or not)."""
        return name in self._models

    def versions(self, name: str) -> list[int]:
        """Available versions of ``name``, ascending."""
        return list(self._models.get(name, {}))

    def get(self, name: str, version: int) -> ServedVersion | None:
        return self._models.get(name, {}).get(version)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ServedVersion:
        """The version a request for (name, version or label) should use; the latest by default."""
        models = self._models
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelNotFoundError(f"model {name!r} not found; served models: {known}")
        versions = models[name]
        if label:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise VersionLabelNotFoundError(
                    f"model {name!r} has no version label {label!r}; labels: {', '.join(sorted(labels)) or 'none'}"
                )
            version = labels[label]
            if version not in versions:
                raise ModelUnavailableError(
                    f"model {name!r} label {label!r} names version {version}, which is not available "
                    f"(available: {', '.join(map(str, versions)) or 'none'})"
                )
        if not versions:
            raise ModelUnavailableError(f"model {name!r} has no version loaded yet")
        if version is None or version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; available: {', '.join(map(str, versions))}"
            )
        return versions[version]
