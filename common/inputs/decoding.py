"""Image files read and decoded to model input, a chunk at a time: what the trainer (``--images``) and the scorer
share. The scorer runs ``decode_files`` on its pool of workers (``tfclassify.client.inputs.workers``); the trainer
calls it directly. How one file becomes pixels is ``tfclassify.common.image_files``'s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from tfclassify.common.image_files import ConversionSpec, ImageDecodeError, apply_invert, check_encoded, decode_image
from tfclassify.common.inputs.sources import FileRef, format_hint, read_file_ref
from tfclassify.common.inputs.zipindex import ZipFormatError

#: Open zip archives by path, per thread: a file position cannot be shared between threads.
_local = threading.local()


def decode_files(refs: list[FileRef], spec: ConversionSpec) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Read and decode ``refs``; returns the pixels of those that decoded ``[n_ok, *spec.shape]``, in order,
    and ``(position, reason)`` for each that did not. For a model that decodes files itself (``spec.channels``
    0) the "pixels" are the files' bytes, untouched, in an object array ``[n_ok]``."""
    if spec.channels == 0:
        files = np.empty(len(refs), dtype=object)
        checked, failed = convert_files(refs, lambda data, ref: check_encoded(data, spec), files)
        return files[:checked], failed
    pixels = np.empty((len(refs), *spec.shape), dtype=np.uint8)
    decoded, failed = convert_files(refs, lambda data, ref: decode_image(data, spec, format_hint(ref)), pixels)
    if spec.channels != 1:  # inverting is for one-channel (MNIST-style) models
        return pixels[:decoded], failed
    return apply_invert(pixels[:decoded], spec.invert), failed


def convert_files(refs: list[FileRef], convert: Callable[[bytes, FileRef], object], out: np.ndarray
                  ) -> tuple[int, list[tuple[int, str]]]:
    """Read each of ``refs`` and store ``convert(data, ref)`` in ``out[0]``, ``out[1]`` ... for those that read and
    convert; returns how many did, and ``(position, reason)`` for each that did not (a file that cannot be read, a
    broken zip member, or ``convert``'s ``ImageDecodeError``)."""
    files = open_files()
    converted = 0
    failed: list[tuple[int, str]] = []
    for position, ref in enumerate(refs):
        try:
            out[converted] = convert(read_file_ref(ref, files), ref)
            converted += 1
        except (ImageDecodeError, ZipFormatError) as exc:
            failed.append((position, str(exc)))
        except OSError as exc:
            failed.append((position, f"cannot read: {exc.strerror or exc}"))
    return converted, failed


def open_files() -> dict[str, BinaryIO]:
    """This thread's open zip archives by path, for ``read_file_ref``."""
    files = getattr(_local, "files", None)
    if files is None:
        files = _local.files = {}
    return files
