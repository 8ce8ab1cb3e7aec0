"""TensorFlow's harmless C++ notices filtered out of stderr, for every command that imports TensorFlow.

TensorFlow's C++ code logs to file descriptor 2 before its logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold those lines back: every import
prints oneDNN and CUDA notices (twice: two libraries each log them), on a
machine without an NVIDIA driver an ``E ... failed call to cuInit`` line that
looks like a real error, and the first ``tf.data`` map of a training run an
``E ... NodeDef mentions attribute use_unbounded_threadpool`` line (a Python
API newer than the kernel it runs on; the attribute is ignored, as the line
itself says). ``TensorFlowNoiseFilter`` runs fd 2 through a pipe: lines known
to be harmless on this machine are dropped, every other line is forwarded as
it arrives. The CUDA lines are harmless only without a driver; on a machine
with an NVIDIA driver they are real errors and always shown.

``tfclassify serve`` filters while TensorFlow is imported and the devices are
set up; ``tfclassify train`` for its whole run (the NodeDef line comes from
training). ``--log-level DEBUG`` turns the filter off. Stdlib only: the
trainer and the server use it without importing each other.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

#: Harmless on any machine.
ALWAYS_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
)
#: Harmless where no NVIDIA driver is installed (CPU machines); real errors elsewhere.
NO_GPU_NOISE = (
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning: Could not find TensorRT",
)
_ABSL_LEVEL = re.compile(r"^([IWEF])\d{4} ")


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ INFO lines (oneDNN notices, ...) unless the user set a level: before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA kernel driver loaded."""
    return os.path.exists("/proc/driver/nvidia/version")


class TensorFlowNoiseFilter:
    """Filters fd 2 between ``start()`` and ``stop()``; ``json_lines`` wraps forwarded lines as JSON log entries."""

    def __init__(self, *, gpu_lines_are_noise: bool, json_lines: bool = False) -> None:
        self._noise = ALWAYS_NOISE + (NO_GPU_NOISE if gpu_lines_are_noise else ())
        self._json = json_lines
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._forward, args=(read_end,), name="stderr-filter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give fd 2 back (safe to call twice, and without ``start()``)."""
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the reader sees its end
        if self._thread is not None:
            self._thread.join(2.0)
        os.close(self._saved)
        self._saved = None

    def _forward(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if any(marker in line for marker in self._noise):
                    self.dropped += 1
                    continue
                saved = self._saved
                if saved is None:  # stop() gave stderr back meanwhile: nothing left to forward to
                    return
                os.write(saved, (self._as_json(line) if self._json and not line.startswith("{") else line)
                         .encode() + b"\n")

    @staticmethod
    def _as_json(line: str) -> str:
        match = _ABSL_LEVEL.match(line)
        level = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}[match.group(1)] if match else "INFO"
        return json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
                           "logger": "tensorflow", "message": line}, ensure_ascii=False)


@contextmanager
def tensorflow_noise_filtered(log_level: str, json_lines: bool = False) -> Iterator[TensorFlowNoiseFilter]:
    """Filter fd 2 for the ``with`` block (or until the filter's ``stop()``), unless ``log_level`` is DEBUG."""
    noise = TensorFlowNoiseFilter(gpu_lines_are_noise=not nvidia_driver_present(), json_lines=json_lines)
    if log_level.upper() != "DEBUG":
        noise.start()
    try:
        yield noise
    finally:
        noise.stop()
