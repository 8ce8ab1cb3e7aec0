"""Reader for numpy ``.npz`` archives: Keras' ``mnist.npz`` and the KMNIST/K49 files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


class NpzFormatError(ValueError):
    """The file is not a readable ``.npz`` archive or lacks the wanted array."""


def read_npz(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read one array from an ``.npz`` file.

    ``key`` names the array (``x_train`` in Keras' ``mnist.npz``); without
    it the archive must hold exactly one array (KMNIST's ``arr_0``).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise NpzFormatError(f"{path}: holds arrays {names}; name the one to read")
                key = names[0]
            if key not in names:
                raise NpzFormatError(f"{path}: has no array {key!r} (it holds {names})")
            return archive[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, NpzFormatError):
            raise
        raise NpzFormatError(f"{path}: not a readable .npz file: {exc}") from exc


#: Usual array names, tried in order ({split} is the --split: test or train).
IMAGE_KEYS = ("images", "x_{split}", "x", "imgs", "arr_0")
LABEL_KEYS = ("labels", "y_{split}", "y")


def npz_arrays(
    path: str | Path, images_key: str | None = None, labels_key: str | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and (when present) labels from one ``.npz``, by the names given or the usual ones.

    Usual names: ``images``/``labels`` or Keras' ``x_test``/``y_test`` (``x_train`` with
    ``split="train"``), or ``x``/``y``; a single array is the images.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            image_name = _pick(path, names, images_key, IMAGE_KEYS, split, "images", required=True)
            if len(names) == 1:
                return archive[image_name], None
            label_name = _pick(path, names, labels_key, LABEL_KEYS, split, "labels", required=labels_key is not None)
            return archive[image_name], archive[label_name] if label_name else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, NpzFormatError):
            raise
        raise NpzFormatError(f"{path}: not a readable .npz file: {exc}") from exc


def npz_labels(path: str | Path, key: str | None = None, split: str = "test") -> np.ndarray:
    """A labels array from a ``.npz``: ``key``, the usual label names, or its only array."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None and len(names) == 1:
            return archive[names[0]]
        return archive[_pick(path, names, key, LABEL_KEYS, split, "labels", required=True)]


def _pick(path: Path, names: list[str], given: str | None, usual: tuple[str, ...], split: str, what: str,
          required: bool) -> str | None:
    if given is not None:
        if given not in names:
            raise NpzFormatError(f"{path}: has no array {given!r} (it holds {names})")
        return given
    for candidate in usual:
        name = candidate.format(split=split)
        if name in names:
            return name
    if len(names) == 1 and what == "images":
        return names[0]
    if required:
        flag = "--npz-images" if what == "images" else "--npz-labels"
        raise NpzFormatError(f"{path}: holds arrays {names}; none has a usual name for {what} "
                             f"({', '.join(k.format(split=split) for k in usual)}): name it with {flag} KEY")
    return None
