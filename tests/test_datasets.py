"""Dataset readers on real files: IDX, npz, the catalog's search and download paths."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from conftest import FASHION_DIR, MNIST_DIR
from tfclassify.client.datasets import (
    DatasetNotFoundError,
    IdxFormatError,
    NpzFormatError,
    load_dataset,
    read_idx,
    read_npz,
)
from tfclassify.client.datasets.catalog import DataFile
from tfclassify.client.datasets.download import MIRROR_ENV, DownloadError, download


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
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_npz_keras_and_kmnist_styles(tmp_path):
    x = np.zeros((3, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(3), x_test=x[:1], y_test=np.arange(1))
    np.savez_compressed(tmp_path / "kmnist-test-imgs.npz", x)
    assert read_npz(tmp_path / "mnist.npz", "x_test").shape == (1, 28, 28)
    assert read_npz(tmp_path / "kmnist-test-imgs.npz").shape == (3, 28, 28)
    with pytest.raises(NpzFormatError, match="name the one to read"):
        read_npz(tmp_path / "mnist.npz")
    with pytest.raises(NpzFormatError, match="has no array 'x_val'"):
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
    with pytest.raises(DatasetNotFoundError, match="md5 .* does not match the published 9fb629c4189551a2d022fa330f9573f3"):
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
    with pytest.raises(DownloadError, match="does not match"):
        download(DataFile(source.name, md5="0" * 32), tmp_path / "other")
