"""Server logging: text or JSON lines. TensorFlow's start-up noise is filtered by
``tfclassify.common.tf_logs`` (shared with the trainer); its names are kept here for the server's callers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from tfclassify.common.tf_logs import TensorFlowNoiseFilter, nvidia_driver_present

LOG_FORMATS = ("text", "json")
__all__ = ["LOG_FORMATS", "JsonFormatter", "StartupNoiseFilter", "configure_logging", "nvidia_driver_present"]

#: The filter ``tfclassify serve`` runs while TensorFlow is imported and the devices are set up.
StartupNoiseFilter = TensorFlowNoiseFilter


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any; and the worker
    process, under ``serve --workers``)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
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
