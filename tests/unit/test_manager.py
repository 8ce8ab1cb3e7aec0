"""``ModelManager``: the life cycle of model versions — load, swap to a newer version, unload, a failed load kept
FAILED and not retried until its files change, an older version served when the newest fails — on a repository of
version folders, with the TensorFlow loading replaced by fake runtimes (no model is loaded or run)."""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fake_models import FakeRuntime
from prometheus_client import CollectorRegistry

from tfclassify.server.core import manager as manager_module
from tfclassify.server.core.batching import BatchingOptions
from tfclassify.server.core.errors import ModelLoadError, ModelNotFoundError, ModelUnavailableError
from tfclassify.server.core.manager import AVAILABLE, FAILED, ModelManager
from tfclassify.server.core.metrics import ServerMetrics
from tfclassify.server.core.registry import ModelRegistry


class Loads:
    """Stands in for ``load_runtime``, ``check_golden_set`` and ``warm_up``: a version folder holding ``broken``
    fails to load; records what was loaded, warmed up and made."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, int]] = []
        self.warmed: list[tuple[str, int, tuple[int, ...]]] = []
        self.made: dict[tuple[str, int], FakeRuntime] = {}

    def load_runtime(self, version_dir, device):
        self.loaded.append((version_dir.model, version_dir.version))
        if (version_dir.path / "broken").exists():
            raise ModelLoadError(f"{version_dir.path}: not a SavedModel")
        runtime = FakeRuntime(version_dir.model, version_dir.version, device=device)
        self.made[(version_dir.model, version_dir.version)] = runtime
        return runtime

    def warm_up(self, runtime, sizes):
        self.warmed.append((runtime.name, runtime.version, sizes))


def add_version(repo, name: str, version: int, broken: bool = False) -> None:
    folder = repo / name / str(version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"stand-in")
    if broken:
        (folder / "broken").touch()


@pytest.fixture()
def loads(monkeypatch):
    fake = Loads()
    monkeypatch.setattr(manager_module, "load_runtime", fake.load_runtime)
    monkeypatch.setattr(manager_module, "check_golden_set", lambda runtime, version_dir: None)
    monkeypatch.setattr(manager_module, "warm_up", fake.warm_up)
    return fake


def life(repo, steps):
    """Run ``steps(manager, registry, samples, changes)`` with a manager of ``repo`` on an event loop (``samples``:
    its metrics; ``changes``: the models known at each ``on_change``)."""
    async def main():
        registry, samples, changes = ModelRegistry(), CollectorRegistry(), []
        metrics = ServerMetrics(samples)

        async def on_change():
            changes.append(registry.names())

        executor = ThreadPoolExecutor(2)
        options = BatchingOptions(max_batch_size=8, max_enqueued_images=64, warmup_batch_sizes=(1, 32))
        manager = ModelManager(repo, None, options, ["/CPU:0"], registry, metrics, executor, on_change)
        try:
            await steps(manager, registry, samples, changes)
        finally:
            await manager.shutdown()
            executor.shutdown()
        return registry

    return asyncio.run(main())


def states(manager) -> list[tuple[str, int, str]]:
    return [(s.name, s.version, s.state) for s in manager.statuses()]


def test_the_newest_version_loads_then_a_newer_one_replaces_it_and_the_old_one_is_unloaded(tmp_path, loads):
    add_version(tmp_path, "m", 1)
    add_version(tmp_path, "m", 2)

    async def steps(manager, registry, samples, changes):
        await manager.reconcile()
        assert loads.loaded == [("m", 2)], "the default policy serves the latest version only"
        assert loads.warmed == [("m", 2, (1, 8))], "warm-up batches no larger than the largest batch"
        assert states(manager) == [("m", 2, AVAILABLE)] and registry.versions("m") == [2]
        assert manager.ready_models() == {"m": True} and changes == [["m"]]
        served = registry.resolve("m")
        assert served.runtime is loads.made[("m", 2)] and served.devices == ["/CPU:0"]
        assert manager.statuses()[0].devices == ["/CPU:0"]
        outputs = await served.batcher.run(np.zeros((3, 4, 4, 1), np.uint8))
        assert outputs["probabilities"].shape == (3, 3) and loads.made[("m", 2)].batches == [3], "it serves"

        add_version(tmp_path, "m", 3)
        await manager.reconcile()
        assert registry.versions("m") == [3] and states(manager) == [("m", 3, AVAILABLE)]
        assert loads.made[("m", 2)].closed and not loads.made[("m", 3)].closed, "the old version's memory freed"
        await manager.reconcile()
        assert loads.loaded == [("m", 2), ("m", 3)], "nothing loads twice"

    life(tmp_path, steps)
    assert loads.made[("m", 3)].closed, "shutdown unloads every version"


def test_a_failed_load_stays_failed_keeps_the_working_version_and_is_retried_when_its_files_change(tmp_path, loads):
    add_version(tmp_path, "m", 1)

    async def steps(manager, registry, samples, changes):
        await manager.reconcile()
        add_version(tmp_path, "m", 2, broken=True)
        await manager.reconcile()
        assert states(manager) == [("m", 1, AVAILABLE), ("m", 2, FAILED)]
        assert manager.statuses("m")[1].error == f"{tmp_path / 'm' / '2'}: not a SavedModel"
        assert registry.resolve("m").runtime is loads.made[("m", 1)], "version 1 keeps serving"
        assert samples.get_sample_value("tfclassify_model_load_failures_total", {"model": "m"}) == 1
        await manager.reconcile()
        assert loads.loaded == [("m", 1), ("m", 2)], "unchanged files are not loaded again"
        (tmp_path / "m" / "2" / "broken").unlink()
        os.utime(tmp_path / "m" / "2" / "saved_model.pb", (2e9, 2e9))  # newer files
        await manager.reconcile()
        assert loads.loaded == [("m", 1), ("m", 2), ("m", 2)] and registry.versions("m") == [2]
        assert states(manager) == [("m", 2, AVAILABLE)] and loads.made[("m", 1)].closed

    life(tmp_path, steps)


def test_when_the_newest_fails_first_an_older_version_serves_rather_than_nothing(tmp_path, loads):
    add_version(tmp_path, "m", 1)
    add_version(tmp_path, "m", 2, broken=True)
    add_version(tmp_path, "n", 1, broken=True)

    async def steps(manager, registry, samples, changes):
        await manager.reconcile()
        assert loads.loaded == [("m", 2), ("m", 1), ("n", 1)]
        assert states(manager) == [("m", 1, AVAILABLE), ("m", 2, FAILED), ("n", 1, FAILED)]
        assert manager.ready_models() == {"m": True, "n": False}
        with pytest.raises(ModelUnavailableError, match=r"^model 'n' has no version loaded yet$"):
            registry.resolve("n")

    life(tmp_path, steps)


def test_a_model_removed_from_the_repository_is_unloaded_and_forgotten(tmp_path, loads):
    add_version(tmp_path, "m", 1)
    add_version(tmp_path, "n", 1)

    async def steps(manager, registry, samples, changes):
        await manager.reconcile()
        assert registry.names() == ["m", "n"]
        shutil.rmtree(tmp_path / "n")
        await manager.reconcile()
        assert registry.names() == ["m"] and states(manager) == [("m", 1, AVAILABLE)]
        assert loads.made[("n", 1)].closed and changes == [["m", "n"], ["m"]]
        with pytest.raises(ModelNotFoundError, match=r"^model 'n' not found; served models: m$"):
            registry.resolve("n")

    life(tmp_path, steps)
