"""Requests to the object store tried again when they failed for a passing reason, and the retries counted.

obstore can retry by itself, but it offers no hook and reports no count, so the requests of ``reads`` and
``writes`` use a store whose own retries are off (``stores.store_for(url, library_retries=False)``) and go
through ``call`` or ``call_async`` here, which only decide whether to try again and count; the library still
signs, sends and reads every request. The limits are the library's: ``stores.RETRY`` (10 retries, backoff from
0.1 s doubling up to 15 s with jitter, none started 3 minutes after the first try).

Transient (retried), by the kind ``counts()`` reports them under:

- ``throttled``: 503 (S3's SlowDown, Azure's ServerBusy) and 429 (GCS's rate limit);
- ``server_error``: any other 5xx but 501 and 505;
- ``connection``: a connection refused, reset or dropped before the whole answer came;
- ``timeout``: no answer within ``TFCLASSIFY_STORAGE_TIMEOUT`` (see ``stores``).

Never retried: 4xx answers (403, 404 ...), an unknown host (DNS), a failure to get credentials unless the
credential service answered 5xx or 429, and anything else the library raises.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import re
import socket
import threading
import time
import urllib.error
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from tfclassify.common.storage.errors import StorageError, credentials_failure
from tfclassify.common.storage.stores import RETRY

T = TypeVar("T")
log = logging.getLogger(__name__)

THROTTLED = "throttled"
SERVER_ERROR = "server_error"
CONNECTION = "connection"
TIMEOUT = "timeout"
#: The kinds of retries ``counts()`` reports, each always present.
KINDS = (THROTTLED, SERVER_ERROR, CONNECTION, TIMEOUT)

# What obstore's exceptions say (max_retries=0, seen with obstore 0.12): "... Server returned non-2xx status code:
# 503 Service Unavailable: <Error><Code>SlowDown</Code>..." for an answer, and for no answer the debug dump's
# "HttpError { kind: Timeout | Connect | Request | Interrupted, ..." (a stall, a refused connection, a connection
# dropped before or while the answer came).
_STATUS = re.compile(r"status code: (\d{3})")
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")

_counts = dict.fromkeys(KINDS, 0)
_lock = threading.Lock()


def counts() -> dict[str, int]:
    """Retries of object-store requests in this process so far, by kind: ``{"throttled": 0, "server_error": 0,
    "connection": 0, "timeout": 0}`` (every kind present)."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Start the counts again from zero."""
    with _lock:
        _counts.update(dict.fromkeys(KINDS, 0))


def count(kind: str) -> None:
    """Count one retry of ``kind`` (one of ``KINDS``)."""
    with _lock:
        _counts[kind] += 1


def transient_kind(exc: BaseException) -> str | None:
    """The kind of passing failure ``exc`` is (one of ``KINDS``), or None when trying again would not help."""
    if isinstance(exc, StorageError):
        return None  # already judged (too large, missing ...): final
    if isinstance(exc, urllib.error.HTTPError):
        return _status_kind(exc.code)
    if isinstance(exc, urllib.error.URLError):  # urllib wraps a failed connection's OSError
        return transient_kind(exc.reason) if isinstance(exc.reason, BaseException) else None
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return TIMEOUT
    if isinstance(exc, (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
        return CONNECTION
    text = str(exc)
    status = _STATUS.search(text)
    kind = _status_kind(int(status.group(1))) if status else _library_kind(text)
    if kind is not None and credentials_failure(text.lower()) and kind not in (THROTTLED, SERVER_ERROR):
        return None  # no credential service there (an instance role off EC2): say so now, not in 3 minutes
    return kind


def _status_kind(code: int) -> str | None:
    if code in (429, 503):
        return THROTTLED
    if 500 <= code <= 599 and code not in (501, 505):
        return SERVER_ERROR
    return None


def _library_kind(text: str) -> str | None:
    match = _HTTP_KIND.search(text)
    lower = text.lower()
    # An unknown host is a wrong endpoint, and a certificate that is not trusted stays so: not passing failures.
    if match is None or "dns error" in lower or "invalidcertificate" in lower:
        return None
    return {"Timeout": TIMEOUT, "Connect": CONNECTION, "Request": CONNECTION, "Interrupted": CONNECTION}.get(
        match.group(1))


def _delays(retry: dict[str, Any]) -> Iterator[float]:
    """Seconds to wait before each retry: the library's backoff (a random wait between the first and ``base``
    times the previous one, at most the largest), ``max_retries`` of them, none past ``retry_timeout`` from now
    (the first try)."""
    return _backoff(retry, time.monotonic())  # read the clock now: a generator's body waits for its first next()


def _backoff(retry: dict[str, Any], start: float) -> Iterator[float]:
    backoff = retry.get("backoff", {})
    first = backoff.get("init_backoff").total_seconds() if "init_backoff" in backoff else 0.1
    largest = backoff.get("max_backoff").total_seconds() if "max_backoff" in backoff else 15.0
    base = float(backoff.get("base", 2))
    deadline = start + retry["retry_timeout"].total_seconds() if "retry_timeout" in retry else None
    previous = first
    for _ in range(retry.get("max_retries", 10)):
        if deadline is not None and time.monotonic() >= deadline:
            return
        delay, previous = previous, min(largest, random.uniform(first, previous * base))
        yield delay


def call(attempt: Callable[[], T], what: str = "", retry: dict[str, Any] = RETRY) -> T:
    """``attempt()``, called again after a transient failure (see the module) within ``retry``'s limits; the
    last failure, or the first one that is not transient, is raised as it is."""
    delays = _delays(retry)
    while True:
        try:
            return attempt()
        except Exception as exc:  # re-raised unless transient: the library's errors share no base but Exception
            delay = _next_delay(exc, delays, what)
            if delay is None:
                raise
        time.sleep(delay)


async def call_async(attempt: Callable[[], Awaitable[T]], what: str = "", retry: dict[str, Any] = RETRY) -> T:
    """``call`` for a coroutine function, waiting on the event loop."""
    delays = _delays(retry)
    while True:
        try:
            return await attempt()
        except Exception as exc:  # re-raised unless transient: the library's errors share no base but Exception
            delay = _next_delay(exc, delays, what)
            if delay is None:
                raise
        await asyncio.sleep(delay)


def _next_delay(exc: BaseException, delays: Iterator[float], what: str) -> float | None:
    """How long to wait before trying again after ``exc`` (counted), or None to give up."""
    kind = transient_kind(exc)
    delay = next(delays, None) if kind is not None else None
    if kind is None or delay is None:
        return None
    count(kind)
    log.debug("retrying %s in %.2f s after a transient failure (%s)", what or "a request", delay, kind)
    return delay


__all__ = ["CONNECTION", "KINDS", "SERVER_ERROR", "THROTTLED", "TIMEOUT", "call", "call_async", "count", "counts",
           "reset", "transient_kind"]
