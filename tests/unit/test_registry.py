"""``ModelRegistry``: which served version a request's (model, version, label) resolves to, and the NOT_FOUND and
UNAVAILABLE errors (with their messages) when none does. Fake versions, no TensorFlow."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_models import FakeRuntime, served_version

from tfclassify.server.core.errors import ModelNotFoundError, ModelUnavailableError, VersionLabelNotFoundError
from tfclassify.server.core.registry import ModelRegistry


@pytest.fixture()
def registry():
    executor = ThreadPoolExecutor(1)
    registry = ModelRegistry()
    async def made():  # a batcher belongs to an event loop (never run here: the registry only routes)
        return {v: served_version(FakeRuntime("m", v), executor) for v in (1, 3, 2)}

    registry.versions_made = asyncio.run(made())
    for served in registry.versions_made.values():
        registry.add(served)
    registry.declare("later")  # known, nothing loaded yet
    yield registry
    executor.shutdown()


def test_the_latest_version_by_default_or_the_one_named(registry):
    made = registry.versions_made
    assert registry.versions("m") == [1, 2, 3] and registry.names() == ["later", "m"]
    assert registry.resolve("m") is made[3]
    assert registry.resolve("m", 0) is made[3], "version 0 is the protobuf default: the latest"
    assert registry.resolve("m", 2) is made[2]
    assert made[2].version_label == "2" and made[2].devices == ["/CPU:0"]


def test_labels_name_versions(registry):
    registry.set_labels("m", {"stable": 1, "canary": 3, "gone": 7})
    assert registry.resolve("m", label="stable") is registry.versions_made[1]
    assert registry.resolve("m", 2, label="canary") is registry.versions_made[3], "the label wins"
    assert registry.labels("m") == {"stable": 1, "canary": 3, "gone": 7}
    with pytest.raises(VersionLabelNotFoundError) as info:
        registry.resolve("m", label="beta")
    assert str(info.value) == "model 'm' has no version label 'beta'; labels: canary, gone, stable"
    assert isinstance(info.value, ModelNotFoundError), "a missing label is NOT_FOUND"
    with pytest.raises(ModelUnavailableError) as info:
        registry.resolve("m", label="gone")
    assert str(info.value) == "model 'm' label 'gone' names version 7, which is not available (available: 1, 2, 3)"


def test_unknown_models_and_versions_are_not_found_and_unloaded_ones_unavailable(registry):
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("nope")
    assert str(info.value) == "model 'nope' not found; served models: later, m"
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("m", 9)
    assert str(info.value) == "model 'm' has no version 9; available: 1, 2, 3"
    with pytest.raises(ModelUnavailableError) as info:
        registry.resolve("later")
    assert str(info.value) == "model 'later' has no version loaded yet"
    with pytest.raises(VersionLabelNotFoundError) as info:
        registry.resolve("later", label="stable")
    assert str(info.value) == "model 'later' has no version label 'stable'; labels: none"
    with pytest.raises(ModelNotFoundError) as missing:
        ModelRegistry().resolve("m")
    assert str(missing.value) == "model 'm' not found; served models: none"


def test_remove_and_forget(registry):
    made = registry.versions_made
    assert registry.remove("m", 3) is made[3] and registry.remove("m", 3) is None
    assert registry.resolve("m") is made[2] and registry.get("m", 3) is None
    registry.remove("m", 1)
    registry.remove("m", 2)
    assert registry.has("m") and registry.versions("m") == []
    with pytest.raises(ModelUnavailableError, match=r"^model 'm' has no version loaded yet$"):
        registry.resolve("m")
    registry.set_labels("m", {"stable": 1})
    registry.forget("m")
    assert not registry.has("m") and registry.labels("m") == {} and registry.names() == ["later"]
    with pytest.raises(ModelNotFoundError, match=r"^model 'm' not found; served models: later$"):
        registry.resolve("m")
