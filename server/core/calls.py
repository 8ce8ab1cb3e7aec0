"""The record of one request that the serving core fills in and an API's meter reads (no transport here)."""

from __future__ import annotations

import time

from tfclassify.server.core.batching import RequestTiming
from tfclassify.server.core.registry import ServedVersion


class Call:
    """One request as it goes: the API records the model version that answers it (``answered_by``, or ``runs_on``
    for a request that runs images on it), the data plane the request's timings; the API's meter reads them at the
    end."""

    __slots__ = ("started_ns", "version", "served", "images", "queued_ns", "ran_ns", "timing")

    def __init__(self) -> None:
        self.started_ns = time.perf_counter_ns()
        self.version = ""  # the metric label: the version that answered
        self.served: ServedVersion | None = None  # set for requests that run images: their statistics
        self.images = 0
        self.queued_ns = self.ran_ns = 0
        self.timing: RequestTiming | None = None

    def answered_by(self, served: ServedVersion) -> ServedVersion:
        """Record the version a request is answered by; returns it."""
        self.version = served.version_label
        return served

    def runs_on(self, served: ServedVersion) -> ServedVersion:
        """Record the version a request runs its images on (it counts in the version's statistics); returns it."""
        self.served = served
        self.version = served.version_label
        return served
