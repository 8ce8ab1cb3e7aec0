"""Find, download if needed, and read a named dataset split into numpy arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfclassify.common.datasets.catalog import DATASETS, SPLITS, DataFile, DatasetSpec, Layout
from tfclassify.common.datasets.cifar import read_cifar
from tfclassify.common.datasets.download import DownloadError, download, source_url
from tfclassify.common.datasets.idx import read_idx
from tfclassify.common.datasets.npz import read_npz

#: Environment variable naming a folder that holds one sub-folder per dataset.
DATA_DIR_ENV = "TFCLASSIFY_DATA_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on this machine and could not be downloaded."""


@dataclass(frozen=True)
class Dataset:
    """One split of a dataset: uint8 images ``[N, H, W]`` (colour: ``[N, H, W, 3]``) and int64 labels ``[N]``."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def dataset_names() -> list[str]:
    """The dataset names ``load_dataset`` knows."""
    return sorted(DATASETS)


def cache_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/tfclassify/datasets`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tfclassify" / "datasets"


def search_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for ``spec``'s files, in order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if env := os.environ.get(DATA_DIR_ENV):
        dirs += [Path(env) / spec.name, Path(env)]
    dirs.append(cache_dir() / spec.name)
    dirs += [Path(d) for d in spec.system_dirs]
    return dirs


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    download_missing: bool = True,
) -> Dataset:
    """Load ``split`` of dataset ``name``.

    Looks in ``data_dir``, ``$TFCLASSIFY_DATA_DIR``, the download cache and
    the folders operating-system packages install to; downloads the
    published files (checksum-verified) when none are found. Raises
    ``DatasetNotFoundError`` with the paths searched and how to get the files.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}: expected one of {', '.join(dataset_names())}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    dirs = search_dirs(spec, data_dir)
    for folder in dirs:
        for layout in spec.layouts:
            images_file, labels_file = layout.split_files(split)
            if _present(folder, images_file) and _present(folder, labels_file):
                return _read(spec, split, folder, layout)
    if not download_missing:
        raise DatasetNotFoundError(_not_found_message(spec, split, dirs, None))
    layout = next(lay for lay in spec.layouts if lay.downloadable)
    target = cache_dir() / spec.name
    try:
        for f in dict.fromkeys(layout.split_files(split)):
            if not (target / f.filename).is_file():
                download(f, target)
    except DownloadError as exc:
        raise DatasetNotFoundError(_not_found_message(spec, split, dirs, exc)) from exc
    return _read(spec, split, target, layout)


def _present(folder: Path, file: DataFile) -> bool:
    path = folder / file.filename
    return path.is_dir() if file.folder else path.is_file()


def _read(spec: DatasetSpec, split: str, folder: Path, layout: Layout) -> Dataset:
    images_f, labels_f = layout.split_files(split)
    if layout.reader == "cifar":
        images, labels = read_cifar(folder / images_f.filename, split)
    else:
        images = read_array(folder / images_f.filename, images_f.npz_key)
        labels = read_array(folder / labels_f.filename, labels_f.npz_key).astype(np.int64)
    colour = images.ndim == 4 and images.shape[3] == 3
    if not (images.ndim == 3 or colour) or images.dtype != np.uint8:
        raise ValueError(f"{folder / images_f.filename}: expected uint8 images [N, H, W] or [N, H, W, 3], got "
                         f"{images.dtype} {list(images.shape)}")
    if labels.shape != (len(images),):
        raise ValueError(f"{folder / labels_f.filename}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"{folder / labels_f.filename}: labels outside 0..{spec.num_classes - 1}")
    return Dataset(spec.name, split, images, labels, spec.labels)


def read_array(path: Path, npz_key: str | None = None) -> np.ndarray:
    """Read an IDX (``*-ubyte[.gz]``) or ``.npz`` file by its name."""
    if path.suffix == ".npz":
        return read_npz(path, npz_key)
    return read_idx(path)


def _not_found_message(spec: DatasetSpec, split: str, dirs: list[Path], error: Exception | None) -> str:
    """One line: what was looked for where, why the download failed, and how to supply the files by hand."""
    layout: Layout = spec.layouts[0]
    files = list(dict.fromkeys(layout.split_files(split)))
    wanted = " and ".join(f.filename for f in files)
    message = f"dataset {spec.name!r} ({split} split) not found: no {wanted} in {', '.join(map(str, dirs))}"
    if error is not None:
        message += f", and the download failed: {error}"
    sources = [source_url(f) for f in files if f.url]
    message += f"; download {' and '.join(sources)} by hand" if sources else f"; get {wanted}"
    if spec.install_hint:
        message += f" (or {spec.install_hint})"
    return message + f", then pass --data-dir FOLDER (the folder holding it) or set {DATA_DIR_ENV}"
