"""The model repository layout, shared by the trainer (writer) and the server (reader).

::

    <repo>/<model>/<version>/          one SavedModel per integer version
        saved_model.pb, variables/     the SavedModel itself
        labels.txt                     optional: one class label per line
        tfclassify.json                optional: training metadata
        golden.npz                     optional: images + labels it must classify correctly

Folders whose name starts with ``.`` are work in progress (the trainer
writes ``.tmp-*`` and renames it into place) and are never loaded. A folder
of the repository is a model when it holds at least one integer-named
folder (a version, complete or not); any other entry (``lost+found`` on a
fresh volume, an empty folder, a README) is ignored, and listed as such.
Stdlib only: no TensorFlow import.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
LABELS_FILE = "labels.txt"
METADATA_FILE = "tfclassify.json"
GOLDEN_FILE = "golden.npz"


@dataclass(frozen=True)
class VersionDir:
    """One version folder of a model."""

    model: str
    version: int
    path: Path

    def labels(self) -> list[str] | None:
        """The labels in ``labels.txt``, or None when the version has none."""
        path = self.path / LABELS_FILE
        if not path.is_file():
            return None
        return [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]

    def metadata(self) -> dict:
        """The training metadata in ``tfclassify.json`` (empty when absent)."""
        path = self.path / METADATA_FILE
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return data


def model_versions(model_dir: Path) -> list[VersionDir]:
    """The complete versions of one model folder, ascending."""
    versions = []
    for child in model_dir.iterdir() if model_dir.is_dir() else ():
        if child.name.startswith(".") or not child.is_dir():
            continue
        if not child.name.isdigit():
            log.debug("ignoring %s: version folders are named by integers", child)
            continue
        if not (child / SAVED_MODEL_FILE).is_file():
            log.warning("ignoring %s: no %s", child, SAVED_MODEL_FILE)
            continue
        versions.append(VersionDir(model_dir.name, int(child.name), child))
    return sorted(versions, key=lambda v: v.version)


@dataclass(frozen=True)
class IgnoredFolder:
    """An entry of the repository that is not a model, and why."""

    name: str
    reason: str


def model_folders(repo: Path) -> tuple[list[Path], list[IgnoredFolder]]:
    """The model folders of ``repo``, by name, and the visible entries that are not models."""
    models, ignored = [], []
    for child in sorted(repo.iterdir()):
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            ignored.append(IgnoredFolder(child.name, "a file, not a model folder"))
            continue
        try:
            has_version = any(c.name.isdigit() and c.is_dir() for c in child.iterdir())
        except OSError as exc:
            ignored.append(IgnoredFolder(child.name, f"cannot be read: {exc.strerror}"))
            continue
        if has_version:
            models.append(child)
        else:
            ignored.append(IgnoredFolder(child.name, "no version folder (<model>/<integer>/saved_model.pb)"))
    return models, ignored


def next_version(model_dir: Path) -> int:
    """One above the highest version folder (complete or not) of ``model_dir``."""
    taken = [int(c.name) for c in model_dir.iterdir() if c.name.isdigit()] if model_dir.is_dir() else []
    return max(taken, default=0) + 1
