"""Readers for the MNIST family and CIFAR-10 (numpy only), shared by the trainer and the client."""

from tfclassify.common.datasets.catalog import DATASETS, SPLITS, DatasetSpec
from tfclassify.common.datasets.cifar import CifarFormatError, read_cifar
from tfclassify.common.datasets.idx import IdxFormatError, read_idx
from tfclassify.common.datasets.loader import (
    Dataset,
    DatasetNotFoundError,
    dataset_names,
    load_dataset,
    read_array,
)
from tfclassify.common.datasets.npz import NpzFormatError, npz_arrays, npz_labels, read_npz

__all__ = [
    "DATASETS",
    "SPLITS",
    "CifarFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IdxFormatError",
    "NpzFormatError",
    "dataset_names",
    "load_dataset",
    "npz_arrays",
    "npz_labels",
    "read_array",
    "read_cifar",
    "read_idx",
    "read_npz",
]
