"""Dataset readers on real files: IDX, npz, the catalog's search and download paths."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
from conftest import FASHION_DIR, MNIST_DIR

from tfclassify.common.datasets import (
    DATASETS,
    DatasetNotFoundError,
    IdxFormatError,
    NpzFormatError,
    load_dataset,
    read_idx,
    read_npz,
)
from tfclassify.common.datasets.catalog import DataFile
from tfclassify.common.datasets.download import MIRROR_ENV, DownloadError, download


def test_mnist_test_set_reads_exactly_as_published(mnist_test):
    assert mnist_test.images.shape == (10000, 28, 28) and mnist_test.images.dtype == np.uint8
    assert mnist_test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert mnist_test.images.tobytes() == raw[16:]


def test_fashion_mnist_from_the_debian_package(fashion_test):
    train = load_dataset("fashion_mnist", "train", FASHION_DIR, download_missing=False)
    assert len(train) == 60000 and len(fashion_test) == 10000
    assert np.bincount(fashion_test.labels).tolist() == [1000] * 10
    assert fashion_test.label_names[0] == "T-shirt/top" and fashion_test.label_names[9] == "Ankle boot"


def test_fashion_mnist_found_without_naming_its_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # empty download cache
    assert len(load_dataset("fashion_mnist", "test", download_missing=False)) == 10000


def test_idx_reads_plain_and_gzip_and_rejects_malformed(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    payload = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + array.tobytes()
    (tmp_path / "plain").write_bytes(payload)
    (tmp_path / "packed.gz").write_bytes(gzip.compress(payload))
    assert np.array_equal(read_idx(tmp_path / "plain"), array)
    assert np.array_equal(read_idx(tmp_path / "packed.gz"), array)
    (tmp_path / "short").write_bytes(payload[:-1])
    with pytest.raises(IdxFormatError, match=r"shape \[2, 3, 4\] \(24 bytes of data\) but the file holds 23 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(IdxFormatError, match=r"not an IDX file"):
        read_idx(tmp_path / "junk")


def test_npz_keras_and_kmnist_styles(tmp_path):
    x = np.zeros((3, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(3), x_test=x[:1], y_test=np.arange(1))
    np.savez_compressed(tmp_path / "kmnist-test-imgs.npz", x)
    assert read_npz(tmp_path / "mnist.npz", "x_test").shape == (1, 28, 28)
    assert read_npz(tmp_path / "kmnist-test-imgs.npz").shape == (3, 28, 28)
    with pytest.raises(NpzFormatError, match=r"name the one to read"):
        read_npz(tmp_path / "mnist.npz")
    with pytest.raises(NpzFormatError, match=r"has no array 'x_val'"):
        read_npz(tmp_path / "mnist.npz", "x_val")


def test_keras_mnist_npz_layout_is_found(tmp_path):
    x = np.full((5, 28, 28), 7, np.uint8)
    y = np.array([0, 1, 2, 3, 4])
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    data = load_dataset("mnist", "train", tmp_path, download_missing=False)
    assert data.images.shape == (5, 28, 28) and data.labels.tolist() == [0, 1, 2, 3, 4]


def test_missing_dataset_says_where_it_looked_and_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, (tmp_path / "empty-mirror").as_uri())
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("kmnist", "test", tmp_path / "nowhere")
    message = str(info.value)
    assert "dataset 'kmnist' (test split) not found" in message
    assert str(tmp_path / "nowhere") in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "the download failed" in message
    assert not any((tmp_path / "cache").rglob("*.gz")), "a failed download must leave no file"


def test_download_rejects_a_checksum_mismatch_and_leaves_nothing(monkeypatch, tmp_path):
    # The shared MNIST files are recompressed, so their md5 differs from the published one.
    monkeypatch.setenv(MIRROR_ENV, MNIST_DIR.as_uri())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match=r"md5 .* does not match the published 9fb629c4189551a2d022fa330f9573f3"):
        load_dataset("mnist", "test", tmp_path / "nowhere")
    assert list((tmp_path / "cache").rglob("*")) == [tmp_path / "cache" / "tfclassify",
                                                     tmp_path / "cache" / "tfclassify" / "datasets",
                                                     tmp_path / "cache" / "tfclassify" / "datasets" / "mnist"]


def test_download_verifies_and_places_the_file(monkeypatch, tmp_path):
    source = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    monkeypatch.setenv(MIRROR_ENV, MNIST_DIR.as_uri())
    path = download(DataFile(source.name, md5=md5), tmp_path / "dest")
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in (tmp_path / "dest").iterdir()] == [source.name]
    with pytest.raises(DownloadError, match=r"does not match"):
        download(DataFile(source.name, md5="0" * 32), tmp_path / "other")


def _cifar_archive(path, train_batches: int = 5, per_batch: int = 4, seed: int = 0):
    """A small ``cifar-10-python.tar.gz`` in the published format: Python pickles of dicts with bytes keys,
    ``b'data'`` uint8 [N, 3072] (red plane, green, blue), ``b'labels'`` a list of ints, and ``batches.meta``."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (train_batches * per_batch + per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    names = [f"data_batch_{i + 1}" for i in range(train_batches)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as archive:
        def add(name: str, value: dict) -> None:
            raw = pickle.dumps(value, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))

        for i, name in enumerate(names):
            part = slice(i * per_batch, (i + 1) * per_batch)
            data = images[part].transpose(0, 3, 1, 2).reshape(per_batch, 3072)
            add(name, {b"batch_label": name.encode(), b"labels": labels[part].tolist(), b"data": data,
                       b"filenames": [b"x.png"] * per_batch})
        add("batches.meta", {b"label_names": [n.encode() for n in DATASETS["cifar10"].labels],
                             b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return images, labels


def test_cifar10_reads_the_python_archive_and_its_extracted_folder(tmp_path):
    import tarfile

    from tfclassify.common.datasets.cifar import read_label_names

    images, labels = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    train = load_dataset("cifar10", "train", tmp_path, download_missing=False)
    test = load_dataset("cifar10", "test", tmp_path, download_missing=False)
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.array_equal(train.images, images[:20]) and train.labels.tolist() == labels[:20].tolist()
    assert np.array_equal(test.images, images[20:]) and test.labels.tolist() == labels[20:].tolist()
    assert train.label_names[:3] == ("airplane", "automobile", "bird") and len(train.label_names) == 10
    assert read_label_names(tmp_path / "cifar-10-python.tar.gz") == train.label_names
    # The folder the archive extracts to serves as well.
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    again = load_dataset("cifar10", "test", tmp_path / "extracted", download_missing=False)
    assert np.array_equal(again.images, test.images)


def test_cifar10_trains_as_a_colour_dataset(tmp_path):
    from tfclassify.trainer.data import DataSource, load_training_data

    _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    data = load_training_data(DataSource(dataset="cifar10", data_dir=tmp_path))
    assert data.input_shape == (32, 32, 3) and data.num_classes == 10 and data.class_names[-1] == "truck"


def test_a_cifar_pickle_may_not_name_other_code(tmp_path):
    import io
    import pickle
    import tarfile

    from tfclassify.common.datasets import CifarFormatError, read_cifar

    raw = pickle.dumps({b"data": __import__("os").getcwd}, protocol=2)  # a pickled reference to os.getcwd
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(raw)
        archive.addfile(info, io.BytesIO(raw))
    with pytest.raises(CifarFormatError, match=r"is not allowed in a CIFAR batch"):
        read_cifar(tmp_path / "evil.tar.gz", "test")


def test_cifar10_offline_fails_in_one_line_with_the_url_and_the_way_by_hand(monkeypatch, tmp_path):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "train", tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset 'cifar10' (train split) not found: no cifar-10-python.tar.gz in ")
    assert ("the download failed: cannot download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: "
            "[Errno -2] Name or service not known") in message
    assert "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz by hand" in message
    assert message.endswith("then pass --data-dir FOLDER (the folder holding it) or set TFCLASSIFY_DATA_DIR")
    assert DATASETS["cifar10"].layouts[0].files["train_images"].md5 == "c58f30108f718f92721af3b95e74349a"
