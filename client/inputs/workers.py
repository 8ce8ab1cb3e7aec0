"""Decoding chunks of image files on a pool of worker processes (or threads).

Decoding a small image with Pillow costs ~45 us, two thirds of it Python
code under the GIL, so threads barely overlap: processes do (see the
README's measurements). Workers read their files themselves (zip members
by offset, folder files by path); only streamed tar members travel as bytes.
They start with ``forkserver``, which is safe beside gRPC's threads (plain
``fork`` is not), preloaded with this module, numpy and Pillow.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from PIL import Image

from tfclassify.common.image_files import (
    ENCODED_FORMATS,
    SERVER_MAX_FILE_PIXELS,
    ConversionSpec,
    apply_invert,
    decode_image,
    is_png_or_jpeg,
)
from tfclassify.common.inputs.decoding import convert_files, decode_files
from tfclassify.common.inputs.sources import FileRef, format_hint

# Import Pillow's format plugins now: in the forkserver that preloads this module, once for every worker.
Image.preinit()

def read_files(refs: list[FileRef], spec: ConversionSpec) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """For a server that decodes files (``--decode server``): an object array ``[n_ok]`` holding, per file of
    ``refs`` that could be read, its bytes when it is a PNG or JPEG file the server takes whole (at most
    ``SERVER_MAX_FILE_PIXELS``; only its header is read here), else its pixels, decoded here as ``decode_files``
    decodes them (GIF, BMP, TIFF, WebP, larger photos: the same pixels the server would make of them); and
    ``(position, reason)`` for each that could not be read or decoded."""
    out = np.empty(len(refs), dtype=object)
    sent, failed = convert_files(refs, lambda data, ref: data if _sendable(data) else _decoded(data, ref, spec), out)
    return out[:sent], failed


def _decoded(data: bytes, ref: FileRef, spec: ConversionSpec) -> np.ndarray:
    """One file's pixels, as ``decode_files`` makes them."""
    pixels = decode_image(data, spec, format_hint(ref))
    return apply_invert(pixels[None], spec.invert)[0] if spec.channels == 1 else pixels


def _sendable(data: bytes) -> bool:
    """Whether ``data`` is a PNG or JPEG file whose header reads and declares at most the pixels a server takes in
    one file."""
    if not is_png_or_jpeg(data):
        return False
    try:
        with Image.open(io.BytesIO(data), formats=ENCODED_FORMATS) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - a broken header: decode_image says why, in its words
        return False
    return 0 < width * height <= SERVER_MAX_FILE_PIXELS


def _ready() -> None:
    """Nothing: submitted once per worker to start them all."""


def _init_worker(scorer_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the scorer stops the run cleanly, workers must not print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A scorer killed with SIGKILL cannot stop its workers: they notice it is gone and leave.
    threading.Thread(target=_exit_with, args=(scorer_pid,), name="tfclassify-watchdog", daemon=True).start()


def _exit_with(pid: int, interval: float = 0.5) -> None:
    while True:
        time.sleep(interval)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # alive, someone else's: cannot be ours any more
            os._exit(0)


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class DecodePool:
    """Runs ``decode_files`` on ``workers`` processes, or on threads when ``workers`` is 0.

    The processes start in the background. Every chunk goes through one of
    ``max(2, workers)`` threads, which decodes it itself while the processes
    are not up yet (~0.2 s) and hands it to them once they are: a run never
    waits for its workers, and never queues work on the slower threads.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._threads = ThreadPoolExecutor(max(2, workers), thread_name_prefix="tfclassify-decode")
        self._starting: Future | None = None
        if workers > 0:
            self._starting = ThreadPoolExecutor(1).submit(_start_processes, workers)

    @property
    def kind(self) -> str:
        return f"{self.workers} processes" if self.workers else "threads"

    def submit(self, refs: list[FileRef], spec: ConversionSpec, send_files: bool = False) -> Future:
        """Start decoding; the future's result is ``decode_files``' (``read_files``' when ``send_files``)."""
        return self._threads.submit(self._decode, refs, spec, read_files if send_files else decode_files)

    def _decode(self, refs: list[FileRef], spec: ConversionSpec, work=decode_files
                ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        if self._starting is not None and self._starting.done():
            return self._starting.result().submit(work, refs, spec).result()
        return work(refs, spec)

    def close(self) -> None:
        """Stop the workers (queued work is dropped)."""
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._starting is not None:
            try:
                processes = self._starting.result()
            except Exception:  # noqa: BLE001 - the pool never started: nothing to stop
                return
            processes.shutdown(wait=True, cancel_futures=True)


def _start_processes(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    # Start every worker now (each submit finds no idle worker and starts one), not on first use.
    for future in [pool.submit(_ready) for _ in range(workers)]:
        future.result()
    return pool
