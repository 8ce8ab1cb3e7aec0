"""The access log: one line per sampled RPC with what an operator needs and nothing a client could abuse.

Off by default (``--access-log-sample 0``). A line holds the API, method, model, version, image count,
latency and status only: no peer address, no metadata (tokens), no request contents. Model names that are
not served are not echoed as given (a client could write anything there), only their length.
"""

from __future__ import annotations

import logging
import random

log = logging.getLogger("tfclassify.access")

#: The ``api`` value of a gRPC method path's package (the same values as the metrics' ``api`` label).
_API_OF_PACKAGE = {"tfclassify.v1": "tfclassify", "tensorflow.serving": "tensorflow_serving",
                   "inference": "open_inference"}


def api_and_method(path: str) -> tuple[str, str]:
    """``("tensorflow_serving", "Predict")`` for ``/tensorflow.serving.PredictionService/Predict``."""
    service, _, method = path.lstrip("/").partition("/")
    package = service.rpartition(".")[0]
    return _API_OF_PACKAGE.get(package, package or "unknown"), method


class AccessLog:
    """Logs a ``sample`` fraction of RPCs (0: none, 1: all) to the ``tfclassify.access`` logger at INFO."""

    def __init__(self, sample: float) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"--access-log-sample must be between 0 and 1, not {sample}")
        self.sample = sample
        self._random = random.Random()

    def record(self, api: str, method: str, model: str, known: bool, version: str, images: int,
               seconds: float, status: str) -> None:
        """Log one RPC if the sample picks it."""
        if self.sample < 1.0 and self._random.random() >= self.sample:
            return
        shown = model if known or not model else f"<unknown, {len(model)} characters>"
        fields = {"api": api, "method": method, "model": shown, "version": version, "images": images,
                  "ms": round(seconds * 1000, 3), "status": status}
        # Text: key=value pairs (values quoted where they could hold spaces); JSON lines: the same as fields.
        log.info("api=%s method=%s model=%r version=%s images=%d ms=%.3f status=%s", api, method, shown,
                 version or "-", images, seconds * 1000, status, extra={"access": fields})
