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
                    raise NpzFormatError(f"{path}: holds arrays {names}; say which one to read")
                key = names[0]
            if key not in names:
                raise NpzFormatError(f"{path}: has no array {key!r} (it holds {names})")
            return archive[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, NpzFormatError):
            raise
        raise NpzFormatError(f"{path}: not a readable .npz file: {exc}") from exc
