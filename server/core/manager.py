"""Model life cycle: loads, warms up, swaps and unloads versions as the
repository and the config file change, without failing a request.

A new version is loaded, checked (golden set) and warmed up on a loader
thread while the old one keeps serving; only then does it take traffic, and
only then are versions the policy no longer wants drained and unloaded. A
version that fails to load is FAILED with its error and never replaces a
working one; it is tried again only when its files change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfclassify.common.model_config import ModelConfigError
from tfclassify.server.core.batching import Batcher, BatchingOptions, Replica
from tfclassify.server.core.errors import ModelLoadError
from tfclassify.server.core.metrics import MODEL_STATES, ServerMetrics
from tfclassify.server.core.model_sources import ModelSource, load_sources
from tfclassify.server.core.registry import ModelRegistry, ServedVersion
from tfclassify.server.runtime.model_runtime import ModelRuntime, check_golden_set, load_runtime, warm_up
from tfclassify.server.runtime.repository import IgnoredFolder, VersionDir, model_folders, model_versions

log = logging.getLogger(__name__)

LOADING, AVAILABLE, UNLOADING, FAILED = MODEL_STATES


@dataclass
class VersionStatus:
    """Where one model version is in its life cycle."""

    name: str
    version: int
    state: str
    error: str = ""
    devices: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    #: Newest modification time of the version's files when it was (last) loaded.
    mtime: float = 0.0


class ModelManager:
    """Keeps the registry in line with the repository and the config file."""

    def __init__(
        self,
        repo: Path,
        config_file: Path | None,
        defaults: BatchingOptions,
        devices: list[str],
        registry: ModelRegistry,
        metrics: ServerMetrics,
        inference_executor: Executor,
        on_change: Callable[[], Awaitable[None]],
        xla_max_batch_size: int = 0,
        max_batch_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.repo, self.config_file, self.defaults, self.devices = repo, config_file, defaults, devices
        self.xla_max_batch_size = xla_max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self.registry, self.metrics = registry, metrics
        self.sources: dict[str, ModelSource] = {}
        #: Entries of the repository that are not models (without a config file).
        self.ignored: list[IgnoredFolder] = []
        self._status: dict[tuple[str, int], VersionStatus] = {}
        self._inference_executor = inference_executor
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self._on_change = on_change
        self._lock = asyncio.Lock()

    # -- queries ---------------------------------------------------------------
    def statuses(self, name: str | None = None) -> list[VersionStatus]:
        """Every known version (of ``name``), by model then version."""
        return [s for key, s in sorted(self._status.items()) if name is None or key[0] == name]

    def ready_models(self) -> dict[str, bool]:
        """Each wanted model and whether it has a version serving."""
        return {name: bool(self.registry.versions(name)) for name in self.sources}

    # -- reconciliation ----------------------------------------------------------
    async def reconcile(self) -> None:
        """Apply the repository and config file as they are now."""
        async with self._lock:
            try:
                sources = load_sources(self.repo, self.config_file, self.defaults)
            except ModelConfigError as exc:
                self.metrics.config_errors.inc()
                log.error("model config not applied, keeping the current one: %s", exc)
                return
            self.sources = {s.name: s for s in sources}
            self._note_ignored(model_folders(self.repo)[1] if self.config_file is None else [])
            for source in sources:
                self.registry.declare(source.name)
                self.registry.set_labels(source.name, source.labels)
            for source in sources:
                await self._reconcile_model(source)
            for name in self.registry.names():
                if name not in self.sources:
                    for version in self.registry.versions(name):
                        await self._unload(name, version)
                    self.registry.forget(name)
                    self._status = {k: v for k, v in self._status.items() if k[0] != name}
            await self._on_change()

    def _note_ignored(self, ignored: list[IgnoredFolder]) -> None:
        if ignored != self.ignored and ignored:  # logged when the list changes, not at every poll
            log.warning("not serving %d folder(s) of the model repository: %s", len(ignored),
                        "; ".join(f"{f.name}: {f.reason}" for f in ignored))
        self.ignored = ignored

    async def poll(self, interval_s: float) -> None:
        """Reconcile every ``interval_s`` seconds, forever."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reconcile()
            except Exception:  # never let one bad poll stop polling
                log.exception("repository poll failed")

    async def shutdown(self) -> None:
        """Drain and unload every version."""
        async with self._lock:
            for name in self.registry.names():
                for version in self.registry.versions(name):
                    await self._unload(name, version)
        self._loader.shutdown(wait=True)

    async def _reconcile_model(self, source: ModelSource) -> None:
        on_disk = {v.version: v for v in model_versions(source.base_path)}
        wanted = source.policy.select(list(on_disk))
        for version in sorted(wanted, reverse=True):
            served = self.registry.get(source.name, version)
            if served is None:
                await self._load_if_new(source, on_disk[version])
            elif served.batcher.options != self._batching_for(source.batching, served.runtime):
                await self._swap_batcher(source, served)
        available = set(self.registry.versions(source.name))
        if not available & wanted:
            # Nothing the policy wants is serving (a broken newest version, say):
            # serve the newest older version that loads rather than nothing.
            for version in sorted(set(on_disk) - wanted, reverse=True):
                if version in available or await self._load_if_new(source, on_disk[version]):
                    wanted = wanted | {version}
                    break
        for version in set(self.registry.versions(source.name)) - wanted:
            await self._unload(source.name, version)
        for version in [v for (n, v), s in self._status.items() if n == source.name and s.state == FAILED]:
            if version not in on_disk:
                del self._status[(source.name, version)]
                self.metrics.set_model_state(source.name, version, None)

    async def _load_if_new(self, source: ModelSource, version_dir: VersionDir) -> bool:
        """Load a version unless it already failed with the same files; True when it serves."""
        key = (source.name, version_dir.version)
        mtime = _newest_mtime(version_dir.path)
        previous = self._status.get(key)
        if previous is not None and previous.state == FAILED and previous.mtime == mtime:
            return False
        status = VersionStatus(source.name, version_dir.version, LOADING, mtime=mtime)
        self._set(status)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            replicas = await loop.run_in_executor(self._loader, self._load_replicas, version_dir, source.batching)
        except ModelLoadError as exc:
            status.state, status.error = FAILED, str(exc)
            self._set(status)
            self.metrics.model_load_failures.labels(source.name).inc()
            log.error("model %s version %d failed to load: %s", source.name, version_dir.version, exc)
            return False
        status.load_seconds = time.monotonic() - started
        status.devices = [r.device for r in replicas]
        self.registry.add(self._serve(source, replicas))
        status.state = AVAILABLE
        self._set(status)
        self.metrics.model_load_duration.labels(source.name, str(version_dir.version)).set(status.load_seconds)
        first = replicas[0]
        log.info(
            "model %s version %d available on %s after %.2f s (%s input %s, %d classes, %s, %s runtime, "
            "XLA batch sizes %s)",
            source.name, first.version, ", ".join(status.devices), status.load_seconds, first.input_dtype.name,
            list(first.input_shape), first.num_classes, first.output_kind, first.runtime_kind,
            list(first.xla_batch_sizes) or "off",
        )
        return True

    def _load_replicas(self, version_dir: VersionDir, batching: BatchingOptions) -> list[ModelRuntime]:
        """On the loader thread: one replica per device, checked and warmed up."""
        replicas: list[ModelRuntime] = []
        try:
            for device in self.devices:
                replicas.append(load_runtime(version_dir, device))
            check_golden_set(replicas[0], version_dir)
            batching = self._batching_for(batching, replicas[0])
            sizes = tuple(sorted({min(s, batching.max_batch_size) for s in batching.warmup_batch_sizes}))
            for replica in replicas:
                replica.compile_small_batches(min(self.xla_max_batch_size, batching.max_batch_size))
                try:
                    warm_up(replica, sizes)
                except Exception as exc:
                    raise ModelLoadError(f"{version_dir.path}: warm-up on {replica.device} failed: {exc}") from exc
        except BaseException:
            for replica in replicas:  # a version that does not serve holds no memory
                replica.close()
            raise
        return replicas

    def _serve(self, source: ModelSource, replicas: list[ModelRuntime]) -> ServedVersion:
        first = replicas[0]
        metrics = self.metrics.for_version(first.name, first.version, first.labels, [r.device for r in replicas],
                                           first.runtime_kind)
        batcher = Batcher(
            f"{first.name}:{first.version}",
            [Replica(r.device, r.run) for r in replicas],
            self._batching_for(source.batching, first),
            self._inference_executor,
            metrics.observer(),
        )
        metrics.watch(batcher)
        return ServedVersion(replicas, batcher, metrics)

    def _batching_for(self, batching: BatchingOptions, runtime: ModelRuntime) -> BatchingOptions:
        """``batching`` with batches of at most ``max_batch_bytes`` of the model's input (files: as configured)."""
        if runtime.takes_encoded:
            return batching
        itemsize = 4 if runtime.takes_float else np.dtype(runtime.input_dtype.as_numpy_dtype).itemsize
        return batching.fitted(math.prod(runtime.image_shape) * itemsize, self.max_batch_bytes)

    async def _swap_batcher(self, source: ModelSource, served: ServedVersion) -> None:
        """Apply changed batching settings: new requests go to a new queue, the old one drains."""
        self.registry.add(self._serve(source, served.replicas))
        await served.batcher.close()
        log.info("model %s version %d: batching now %s", source.name, served.runtime.version,
                 self._batching_for(source.batching, served.runtime))

    async def _unload(self, name: str, version: int) -> None:
        status = self._status.get((name, version)) or VersionStatus(name, version, UNLOADING)
        status.state = UNLOADING
        self._set(status)
        served = self.registry.remove(name, version)
        if served is not None:
            await served.batcher.close()  # the queued and running requests finish first
            served.metrics.remove()
            for replica in served.replicas:
                replica.close()
        self._status.pop((name, version), None)
        self.metrics.set_model_state(name, version, None)
        log.info("model %s version %d unloaded", name, version)

    def _set(self, status: VersionStatus) -> None:
        self._status[(status.name, status.version)] = status
        self.metrics.set_model_state(status.name, status.version, status.state)


def _newest_mtime(path: Path) -> float:
    return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
