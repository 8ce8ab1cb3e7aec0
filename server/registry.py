"""The models being served, by name and version; resolves a request's ``ModelSpec``."""

from __future__ import annotations

import threading

from tfclassify.server.errors import ModelNotFoundError, ModelUnavailableError
from tfclassify.server.runtime import ModelRuntime


class ModelRegistry:
    """Loaded model versions. Readers never lock: writers replace the whole
    mapping (copy on write), so a request sees one consistent snapshot."""

    def __init__(self) -> None:
        self._models: dict[str, dict[int, ModelRuntime]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._write_lock = threading.Lock()

    def declare(self, name: str) -> None:
        """Make ``name`` known before any version has loaded (requests get UNAVAILABLE, not NOT_FOUND)."""
        with self._write_lock:
            if name not in self._models:
                self._models = {**self._models, name: {}}

    def add(self, runtime: ModelRuntime) -> None:
        """Start serving ``runtime``."""
        with self._write_lock:
            versions = {**self._models.get(runtime.name, {}), runtime.version: runtime}
            self._models = {**self._models, runtime.name: dict(sorted(versions.items()))}

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Set the version labels (``stable`` -> 3, ...) of model ``name``."""
        with self._write_lock:
            self._labels = {**self._labels, name: dict(labels)}

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[int]:
        """Available versions of ``name``, ascending."""
        return list(self._models.get(name, {}))

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ModelRuntime:
        """The runtime a request for (name, version or label) should use; the latest by default."""
        models = self._models
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelNotFoundError(f"model {name!r} not found; served models: {known}")
        versions = models[name]
        if label:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise ModelNotFoundError(
                    f"model {name!r} has no version label {label!r}; labels: {', '.join(sorted(labels)) or 'none'}"
                )
            version = labels[label]
        if not versions:
            raise ModelUnavailableError(f"model {name!r} has no version loaded yet")
        if version is None or version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; available: {', '.join(map(str, versions))}"
            )
        return versions[version]
