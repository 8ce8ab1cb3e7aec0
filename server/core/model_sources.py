"""The model config file (``--model-config``): which models, versions, labels and batching.

The file is a ``tfclassify.v1.ServerConfig`` message in protobuf text format
or JSON (see ``proto/tfclassify/v1/model_config.proto``). Without a file,
every model folder in the repository is served at its latest version.
Protobuf stays at this edge: the rest of the server sees ``ModelSource``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tfclassify.common.model_config import ModelConfigError, read_model_config
from tfclassify.server.core.batching import BatchingOptions
from tfclassify.server.runtime.repository import model_folders
from tfclassify.v1 import model_config_pb2 as config_pb


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: the ``latest`` N, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> set[int]:
        """The versions of ``on_disk`` this policy serves."""
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(self.versions) & set(on_disk)
        return set(sorted(on_disk)[-self.num_versions :])


@dataclass(frozen=True)
class ModelSource:
    """One model to serve and how."""

    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)
    batching: BatchingOptions = field(default_factory=BatchingOptions)


def load_sources(repo: Path, config_file: Path | None, defaults: BatchingOptions) -> list[ModelSource]:
    """The models to serve now: from ``config_file`` if given, else every model folder of ``repo``
    (``repository.model_folders``: folders holding a version folder)."""
    if config_file is None:
        if not repo.is_dir():
            raise ModelConfigError(f"model repository {repo} is not a folder")
        return [ModelSource(child.name, child, batching=defaults) for child in model_folders(repo)[0]]
    config = read_model_config(config_file)
    server_defaults = merge_batching(defaults, config.batching)
    sources, seen = [], set()
    for model in config.models:
        if not model.name:
            raise ModelConfigError(f"{config_file}: a model has no name")
        if model.name in seen:
            raise ModelConfigError(f"{config_file}: model {model.name!r} is listed twice")
        seen.add(model.name)
        base = Path(model.base_path) if model.base_path else Path(model.name)
        sources.append(
            ModelSource(
                name=model.name,
                base_path=base if base.is_absolute() else repo / base,
                policy=_policy(model.version_policy, config_file, model.name),
                labels=dict(model.version_labels),
                batching=merge_batching(server_defaults, model.batching),
            )
        )
    return sources


def merge_batching(base: BatchingOptions, override: config_pb.BatchingConfig) -> BatchingOptions:
    """``base`` with the fields ``override`` sets."""
    changes: dict = {}
    for name in ("max_batch_size", "max_enqueued_images", "max_concurrent_batches"):
        if override.HasField(name):
            changes[name] = getattr(override, name)
    if override.HasField("batch_timeout_micros"):
        changes["batch_timeout_s"] = override.batch_timeout_micros / 1e6
    if override.warmup_batch_sizes:
        changes["warmup_batch_sizes"] = tuple(override.warmup_batch_sizes)
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise ModelConfigError(f"batching: {exc}") from exc


def _policy(policy: config_pb.VersionPolicy, path: Path, model: str) -> VersionPolicy:
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        if not policy.specific.versions:
            raise ModelConfigError(f"{path}: model {model!r}: specific version policy lists no versions")
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=max(1, policy.latest.num_versions))
    return VersionPolicy()
