"""True labels for image files: the parent folder's name, or a manifest file.

A label names one of the model's classes, by name (``Shirt``) or by index
(``7``); a ``/`` in a class name may be written ``_`` (a folder named
``T-shirt_top`` holds ``T-shirt/top`` images). A manifest is CSV with a header naming the columns ``path`` and
``label``, or JSON Lines with those two keys; its paths are relative to the
folder or archive root (``Shirt/0001.png``), as the scorer's ``member`` paths are.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TextIO, cast

from tfclassify.common.storage.errors import StorageError
from tfclassify.common.storage.urls import is_object_url

#: ``--labels`` value that takes labels from the parent folder names.
FOLDER = "folder"
#: ``--labels`` value (the command's default) that takes labels from the parent folder names when every file sits
#: in a folder named after one of the model's classes, and scores without true labels otherwise.
AUTO = "auto"
#: ``--labels`` value for no true labels at all (turns ``auto`` off).
NONE = "none"
#: Why a file outside every class folder (``README.md`` at the root) is skipped, by the scorer and the trainer alike.
NOT_IN_CLASS_FOLDER = "not in a class folder"


class LabelError(ValueError):
    """Labels that do not fit the model or cannot be read."""


def read_manifest(path: Path | str) -> dict[str, str]:
    """``member path -> label`` from a CSV (``path,label`` header) or JSONL manifest: a file, or an object URL."""
    try:
        with _open_manifest(path) as f:
            manifest = {}
            for line, member, label in manifest_rows(f, path):
                key = normalise_member(member)
                if key in manifest:
                    raise LabelError(f"{path}:{line}: {member!r} is listed twice")
                manifest[key] = cast(str, label)  # label_required: never None
    except StorageError:
        raise
    except OSError as exc:
        raise LabelError(f"cannot read the labels manifest {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not a UTF-8 text file (expected CSV or JSON Lines)") from exc
    if not manifest:
        raise LabelError(f"{path}: the manifest lists no images")
    return manifest


def manifest_rows(f: TextIO, origin: str | Path, label_required: bool = True
                  ) -> Iterator[tuple[int, str, str | None]]:
    """``(line, path, label)`` of each row of the CSV or JSON Lines manifest open in ``f``, read as it streams
    (``label`` None where a row has none, which only ``label_required`` False allows)."""
    first = f.readline()
    lines = itertools.chain([first], f)
    if first.lstrip().startswith("{"):
        yield from _jsonl_rows(lines, origin, label_required)
    else:
        yield from _csv_rows(lines, origin, label_required)


@contextmanager
def _open_manifest(path: Path | str) -> Iterator[TextIO]:
    if is_object_url(path):
        from tfclassify.common.storage.reads import open_stream  # the storage library only when a URL is used
        from tfclassify.common.storage.urls import parse

        with io.TextIOWrapper(open_stream(parse(str(path))), encoding="utf-8", newline="") as f:
            yield f
    else:
        with open(path, encoding="utf-8", newline="") as f:
            yield f


def normalise_member(member: str) -> str:
    """A path inside a folder or archive, as manifests and items compare it (``./a//b`` -> ``a/b``)."""
    return PurePosixPath(member.replace("\\", "/")).as_posix().removeprefix("./")


def folder_label(member: str) -> str | None:
    """The name of the folder that directly holds ``member`` (None at the root)."""
    parts = member.rsplit("/", 2)
    return parts[-2] or None if len(parts) > 1 else None


class LabelResolver:
    """Maps label text (a class name or index) to the model's class index."""

    def __init__(self, class_names: Iterable[str]) -> None:
        self.class_names = list(class_names)
        self._by_name = {name: i for i, name in enumerate(self.class_names)}
        # A folder cannot be named "T-shirt/top": "T-shirt_top" names that class too, unless it is taken.
        for i, name in enumerate(self.class_names):
            self._by_name.setdefault(name.replace("/", "_"), i)

    def resolve(self, label: str | int) -> int | None:
        """The class index of ``label``, or None when it names no class of the model."""
        if isinstance(label, int):
            return label if 0 <= label < len(self.class_names) else None
        index = self._by_name.get(label)
        if index is None and label.isdigit():
            index = int(label) if int(label) < len(self.class_names) else None
        return index

    def names_class(self, label: str | int | None) -> bool:
        """Whether ``label`` (a folder name) is one of the model's class names (``T-shirt_top`` for ``T-shirt/top``);
        an index (``7``) only when it is the class's name too, as for digits: a folder named ``3`` is not taken to
        mean the model's fourth class."""
        return label is not None and label in self._by_name

    def check(self, labels: Iterable[str | int], origin: str) -> None:
        """``LabelError`` naming every label that is not a class, and listing the classes."""
        unknown = sorted({str(label) for label in labels if self.resolve(label) is None})
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            classes = ", ".join(repr(c) for c in self.class_names)
            raise LabelError(
                f"{origin} {shown} {'is' if len(unknown) == 1 else 'are'} not a class of the model; "
                f"its classes are {classes} (or their indices 0-{len(self.class_names) - 1})"
            )


def _csv_rows(f: Iterable[str], path: str | Path, label_required: bool = True):
    reader = csv.DictReader(f)
    needed = {"path", "label"} if label_required else {"path"}
    if not reader.fieldnames or not needed <= set(reader.fieldnames):
        columns = "the columns path and label" if label_required else "a column path (and label, optionally)"
        raise LabelError(f"{path}: a CSV manifest needs a header with {columns}")
    for row in reader:
        label = row.get("label")
        if not row["path"] or (label_required and label is None):
            raise LabelError(f"{path}:{reader.line_num}: expected a path{' and a label' if label_required else ''}")
        if label is not None:
            label = label.strip() if label_required else (label.strip() or None)
        yield reader.line_num, row["path"], label


def _jsonl_rows(f: Iterable[str], path: str | Path, label_required: bool = True):
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelError(f"{path}:{line_no}: not JSON: {exc.msg}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or (label_required and "label" not in row):
            raise LabelError(f'{path}:{line_no}: expected {{"path": ..., "label": ...}}' if label_required
                             else f'{path}:{line_no}: expected {{"path": ...}}')
        label = row.get("label")
        yield line_no, row["path"], None if label is None else str(label)
