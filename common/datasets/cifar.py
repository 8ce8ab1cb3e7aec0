"""Reader for the "python version" of CIFAR-10 (``cifar-10-python.tar.gz``), numpy only.

The archive holds ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (training), ``test_batch`` and
``batches.meta``, each a Python 2 pickle of a dict with bytes keys. A batch's ``b'data'`` is a uint8 array
``[N, 3072]``: per image the 1,024 red values, then green, then blue, each a row-major 32 x 32 plane;
``b'labels'`` is a list of N ints. The reader takes the archive itself or the folder it extracts to.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
SIDE = 32

#: What a CIFAR pickle may name: numpy's array reconstruction (and bytes), nothing else. A pickle can otherwise run any
#: code, and a file the user hands us is not checksum-verified as a download is.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    # How Python 3 writes bytes at pickle protocol 2 (a re-pickled archive); harmless: it only encodes a string.
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class CifarFormatError(ValueError):
    """The file is not the python version of CIFAR-10, or is damaged."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(*target)


def read_cifar(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 32, 32, 3]`` and int64 labels ``[N]`` of ``split`` ("train" or "test") from
    ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py`` folder."""
    path = Path(path)
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    batches = [_batch(path, name, raw) for name, raw in _members(path, names)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    return images, labels


def read_label_names(path: str | Path) -> tuple[str, ...]:
    """The class names ``batches.meta`` lists, in label order."""
    [(_, raw)] = _members(Path(path), (META,))
    meta = _unpickle(Path(path), META, raw)
    try:
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise CifarFormatError(f"{path}: {META} has no list b'label_names'") from exc


def _members(path: Path, names: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """The bytes of each named file, from the folder or the archive (read in one pass)."""
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CifarFormatError(f"{folder}: no {missing[0]} (not an extracted {FOLDER} folder)")
        return [(n, (folder / n).read_bytes()) for n in names]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if name in names and member.isfile() and name not in found:
                    data = archive.extractfile(member)
                    assert data is not None  # a regular file (isfile() above) always has its data
                    found[name] = data.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise CifarFormatError(f"{path}: not a readable tar archive ({exc})") from exc
    missing = [n for n in names if n not in found]
    if missing:
        raise CifarFormatError(f"{path}: no {FOLDER}/{missing[0]} in the archive (is it cifar-10-python.tar.gz?)")
    return [(n, found[n]) for n in names]


def _unpickle(path: Path, name: str, raw: bytes) -> dict:
    try:
        value = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle is a damaged or foreign file
        raise CifarFormatError(f"{path}: {name} is not a CIFAR batch ({exc})") from exc
    if not isinstance(value, dict):
        raise CifarFormatError(f"{path}: {name} is not a CIFAR batch (a {type(value).__name__}, not a dict)")
    return value


def _batch(path: Path, name: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path, name, raw)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CifarFormatError(f"{path}: {name}: expected b'data' uint8 [N, 3072], got {got}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),):
        raise CifarFormatError(f"{path}: {name}: {labels.size} labels for {len(data)} images")
    # Channel planes first in the file; images are [H, W, C] everywhere else.
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1).copy(), labels
