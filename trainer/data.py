"""The images a run trains and tests on: a named dataset, the user's arrays (IDX or ``.npz``), or a folder or
archive of image files labelled by the folder that holds them. numpy and Pillow only."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image

from tfclassify.common.datasets import DATASETS, load_dataset, read_array
from tfclassify.common.image_files import ConversionSpec
from tfclassify.common.inputs.decoding import decode_files
from tfclassify.common.inputs.labels import NOT_IN_CLASS_FOLDER, folder_label
from tfclassify.common.inputs.sources import FileRef, InputError, open_input, read_file_ref
from tfclassify.common.text import counted

IMAGE_SHAPE = (28, 28)
#: Pillow modes that hold grey pixels only; a file in any other mode (RGB, RGBA, P, CMYK, ...) counts as colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


class DataError(ValueError):
    """Training data that cannot be used as given; the message says what is wrong and where."""


@dataclass(frozen=True)
class DataSource:
    """Where a run's images come from: exactly one of a dataset name, an ``.npz`` file holding both splits,
    array files per split, or a folder/archive of labelled images."""

    dataset: str | None = None
    data_dir: Path | None = None
    npz: Path | None = None
    #: Array names inside ``npz``: train images, train labels, test images, test labels.
    npz_keys: tuple[str, str, str, str] = ("x_train", "y_train", "x_test", "y_test")
    train_images: Path | None = None
    train_labels: Path | None = None
    test_images: Path | None = None
    test_labels: Path | None = None
    images: Path | None = None
    #: ``images`` only: the size files are resized to, (height, width).
    image_size: tuple[int, int] = IMAGE_SHAPE
    #: ``images`` only: 1 (grayscale), 3 (RGB), or None: 3 when any file is colour (``GREY_MODES``), else 1.
    channels: int | None = None
    #: Class names for array data (default: the label numbers).
    class_names: tuple[str, ...] | None = None
    #: Share of the training images held out as the test set when the data has no test split.
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class TrainingData:
    """Train and test splits, uint8 images (``[N, 28, 28]``; from files ``[N, H, W]`` or ``[N, H, W, 3]``) and int
    labels, with class names and checksums."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    #: How the test set was made ("the dataset's test split", "20% held out (seed 0)").
    test_split: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: How image files were decoded (``ConversionSpec.describe()`` and the inversion rule); None for arrays.
    conversion: dict | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One image's shape: ``(H, W)`` grayscale or ``(H, W, C)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def checksums(self) -> dict[str, str]:
        """SHA-256 of each array's bytes: the same images give the same sums whatever file held them."""
        return {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                for name, a in (("train_images", self.x_train), ("train_labels", self.y_train),
                                ("test_images", self.x_test), ("test_labels", self.y_test))}

    def limited(self, n: int | None) -> TrainingData:
        """This data with only the first ``n`` training images (all of them when ``n`` is None)."""
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n]) if n else self


def load_training_data(source: DataSource) -> TrainingData:
    """Read and check the images ``source`` names (``DataError`` for anything unusable)."""
    chosen = [bool(source.dataset), bool(source.npz), bool(source.train_images), bool(source.images)]
    if sum(chosen) != 1:
        raise DataError("give exactly one of --dataset, --npz, --train-images (with --train-labels) or --images")
    if source.dataset:
        return _named(source)
    if source.npz:
        return _from_npz(source)
    if source.train_images:
        return _from_array_files(source)
    return _from_image_files(source)


def _named(source: DataSource) -> TrainingData:
    if source.dataset not in DATASETS:
        raise DataError(f"unknown dataset {source.dataset!r}: expected one of {', '.join(sorted(DATASETS))}")
    train = load_dataset(source.dataset, "train", source.data_dir)
    test = load_dataset(source.dataset, "test", source.data_dir)
    return TrainingData(train.images, train.labels, test.images, test.labels, tuple(train.label_names),
                        source.dataset, "the dataset's test split")


def _from_npz(source: DataSource) -> TrainingData:
    path = source.npz
    assert path is not None  # load_training_data calls this only with npz
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    x_key, y_key, xt_key, yt_key = source.npz_keys
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in (x_key, y_key) if k not in arrays]
    if missing:
        raise DataError(f"{path}: no array {missing[0]!r} (it holds {', '.join(sorted(arrays)) or 'nothing'}); "
                        "name the arrays with --npz-keys TRAIN_X,TRAIN_Y,TEST_X,TEST_Y")
    x, y = arrays[x_key], arrays[y_key]
    test = (arrays[xt_key], arrays[yt_key]) if xt_key in arrays and yt_key in arrays else None
    return _arrays(source, x, y, test, f"{path}[{x_key}, {y_key}]", str(path))


def _from_array_files(source: DataSource) -> TrainingData:
    if not source.train_labels:
        raise DataError("--train-images needs --train-labels")
    if bool(source.test_images) != bool(source.test_labels):
        raise DataError("give --test-images and --test-labels together")

    def read(path: Path) -> np.ndarray:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            return read_array(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: {exc}") from exc

    assert source.train_images is not None  # load_training_data calls this only with train_images
    # test_labels are given with test_images (checked above)
    test = (read(source.test_images), read(source.test_labels)) if source.test_images and source.test_labels else None
    return _arrays(source, read(source.train_images), read(source.train_labels), test, str(source.train_labels),
                   str(source.train_images))


def _arrays(source: DataSource, x: np.ndarray, y: np.ndarray, test: tuple[np.ndarray, np.ndarray] | None,
            labels_origin: str, origin: str) -> TrainingData:
    x, y = _checked_images(x, origin), _checked_labels(y, len(x), labels_origin)
    if test is not None:
        xt, yt = _checked_images(test[0], origin + " (test)"), _checked_labels(test[1], len(test[0]), labels_origin)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{origin}: test images are {list(xt.shape[1:])}, training images {list(x.shape[1:])}")
    num_classes = int(max(y.max(), yt.max() if test is not None else 0)) + 1
    if num_classes < 2:
        raise DataError(f"{labels_origin}: every label is 0: a classifier needs at least 2 classes, got 1")
    names = source.class_names or tuple(str(i) for i in range(num_classes))
    if len(names) < num_classes:
        raise DataError(f"{labels_origin}: labels go up to {num_classes - 1} but {len(names)} class names were given")
    if test is None:
        x, y, xt, yt, how = _hold_out(x, y, source.test_fraction, source.seed)
    else:
        how = "the data's test split"
    return TrainingData(x, y, xt, yt, tuple(names), origin, how)


def _checked_images(x: np.ndarray, origin: str) -> np.ndarray:
    if x.ndim == 2 and x.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        x = x.reshape(-1, *IMAGE_SHAPE)
    if x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)) or min(x.shape[1:3], default=0) < 1:
        raise DataError(f"{origin}: expected images [N, H, W] or [N, H, W, 3] (or [N, 784]), got shape "
                        f"{list(x.shape)}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 255 \
                or not np.array_equal(x, np.round(x)):
            raise DataError(f"{origin}: expected uint8 pixels 0..255, got {x.dtype} values that are not")
        x = x.astype(np.uint8)
    if not len(x):
        raise DataError(f"{origin}: no images")
    return x


def _checked_labels(y: np.ndarray, n: int, origin: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{origin}: expected integer class labels [N], got {y.dtype} {list(y.shape)}")
    if len(y) != n:
        raise DataError(f"{origin}: {counted(len(y), 'label')} for {counted(n, 'image')}")
    if y.min() < 0:
        raise DataError(f"{origin}: negative label {int(y.min())}")
    return y.astype(np.int64)


def _hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    if not 0 < fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * fraction))
    if n_test >= len(x):
        raise DataError(f"{counted(len(x), 'image')} {'is' if len(x) == 1 else 'are'} too few to hold out "
                        f"{fraction:.0%} as a test set")
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test], f"{fraction:.0%} held out at random (seed {seed})"


def _from_image_files(source: DataSource) -> TrainingData:
    """A folder or archive whose images sit in one folder per class (``Shirt/0001.png``)."""
    assert source.images is not None  # load_training_data calls this only with images
    try:
        items = list(open_input(source.images).items())
    except InputError as exc:
        raise DataError(str(exc)) from exc
    labelled = [(item, folder_label(item.member)) for item in items]
    skipped = [(item.source, NOT_IN_CLASS_FOLDER) for item, label in labelled if label is None]
    filed = [(item, label) for item, label in labelled if label is not None]
    refs = [cast(FileRef, item.ref) for item, _ in filed]  # open_input's items are files
    height, width = source.image_size
    channels = source.channels or image_channels(refs)
    spec = ConversionSpec(height, width, channels=channels)
    # The scorer's own decoding (formats, pixel limits, inversion), with its reasons for what it skips.
    x, failed = decode_files(refs, spec)
    unreadable = {position for position, _ in failed}
    skipped += [(filed[position][0].source, reason) for position, reason in failed]
    labels = [label for position, (_, label) in enumerate(filed) if position not in unreadable]
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise DataError(f"{source.images}: expected images in at least 2 class folders (e.g. Shirt/0001.png), "
                        f"found {len(names)}")
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    xs, ys, xt, yt, how = _hold_out(x, y, source.test_fraction, source.seed)
    conversion = {**spec.describe(), "invert": spec.invert if channels == 1 else "no",
                  "channels_from": "--channels" if source.channels else "auto (3 if any file is colour)"}
    return TrainingData(xs, ys, xt, yt, names, str(source.images), how, skipped, conversion)


def image_channels(refs: list[FileRef]) -> int:
    """3 when any of the files is colour (its Pillow mode is not one of ``GREY_MODES``), else 1. Reads headers only,
    stops at the first colour file; files that cannot be read are left to the decoder to report."""
    files: dict[str, BinaryIO] = {}
    try:
        for ref in refs:
            try:
                with Image.open(io.BytesIO(read_file_ref(ref, files))) as img:
                    if img.mode not in GREY_MODES:
                        return 3
            except Exception:  # noqa: BLE001 - not an image, unreadable: decode_files says why, once
                continue
        return 1
    finally:
        for f in files.values():  # zip archives read_file_ref opened
            f.close()
