"""Server logging: text or JSON lines, and TensorFlow's start-up noise filtered out.

TensorFlow's C++ code logs to file descriptor 2 before its logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold those lines back: every start
prints oneDNN and CUDA notices, and on a machine without an NVIDIA driver an
``E ... failed call to cuInit`` line that looks like a real error.
``StartupNoiseFilter`` runs fd 2 through a pipe while TensorFlow is imported
and the devices are set up: lines known to be harmless on this machine are
dropped, every other line is forwarded as it arrives (so a crash loses
nothing). The CUDA lines are harmless only without a driver; on a machine
with an NVIDIA driver they are real errors and always shown. Stdlib only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import datetime, timezone

LOG_FORMATS = ("text", "json")

#: Harmless on any machine.
_ALWAYS_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
)
#: Harmless where no NVIDIA driver is installed (CPU machines); real errors elsewhere.
_NO_GPU_NOISE = (
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning: Could not find TensorRT",
)
_ABSL_LEVEL = re.compile(r"^([IWEF])\d{4} ")


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA kernel driver loaded."""
    return os.path.exists("/proc/driver/nvidia/version")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any; and the worker
    process, under ``serve --workers``)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        access = getattr(record, "access", None)  # the access log's fields, as fields
        if access is not None:
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text", worker: int | None = None) -> None:
    """Set up the root logger: ``text`` lines or ``json`` lines, on stderr; ``worker`` names the worker process
    in each line (``serve --workers``: the workers share the supervisor's stderr)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        where = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class StartupNoiseFilter:
    """Filters fd 2 between ``start()`` and ``stop()``; ``json`` wraps forwarded lines as JSON log entries."""

    def __init__(self, *, gpu_lines_are_noise: bool, json_lines: bool = False) -> None:
        self._noise = _ALWAYS_NOISE + (_NO_GPU_NOISE if gpu_lines_are_noise else ())
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
        """Give fd 2 back (safe to call twice)."""
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
                os.write(self._saved, (self._as_json(line) if self._json and not line.startswith("{") else line)
                         .encode() + b"\n")

    @staticmethod
    def _as_json(line: str) -> str:
        match = _ABSL_LEVEL.match(line)
        level = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}[match.group(1)] if match else "INFO"
        return json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
                           "logger": "tensorflow", "message": line}, ensure_ascii=False)
