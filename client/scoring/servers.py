"""Several servers behind one ``classify``: least-busy choice, failover, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass

import grpc
import numpy as np

from tfclassify.client import aio
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.http_transport import is_http_url
from tfclassify.client.requests import BACKOFF_BASE_S, BACKOFF_CAP_S, DEFAULT_MAX_REQUEST_BYTES, RETRYABLE_CODES
from tfclassify.client.results import ClassifyResult, ModelInfo

log = logging.getLogger(__name__)

# After RETRYABLE_CODES (the library's) the same batch is sent again: the server did not answer it (down,
# overloaded, or shutting down while the request arrived). The scorer cancels its own calls only when it stops,
# so CANCELLED here comes from the server side. INVALID_ARGUMENT is never retried.


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)) seconds."""

    max_retries: int = 6
    base_s: float = BACKOFF_BASE_S
    cap_s: float = BACKOFF_CAP_S

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))


class ServerPool:
    """Sends each batch to the least busy server that is not backing off; UNAVAILABLE moves it elsewhere.

    ``targets`` are gRPC addresses or ``http(s)://`` URLs (mixed as wished): ``credentials`` go to the gRPC ones,
    ``ssl_context`` to the ``https://`` ones."""

    def __init__(self, targets: list[str], *, timeout: float, retry: RetryPolicy = RetryPolicy(),
                 credentials: grpc.ChannelCredentials | None = None, token: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        if not targets:
            raise ValueError("no server to score against")
        self.targets = list(targets)
        self.timeout = timeout
        self.retry = retry
        self.retries = 0
        # retries=0: the scorer retries a refused batch itself, on another server where it has one.
        self._clients = [aio.ClassifierClient(t, timeout=timeout, token=token, retries=0,
                                              max_request_bytes=max_request_bytes,
                                              **({"ssl_context": ssl_context} if is_http_url(t)
                                                 else {"credentials": credentials}))
                         for t in self.targets]
        self._busy = [0] * len(self._clients)
        self._down_until = [0.0] * len(self._clients)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients))

    async def model_metadata(self, model: str, version: int | None, version_label: str | None) -> ModelInfo:
        """The model's metadata from the first server that answers (the version a label points to, if given).

        Each server is asked once, without backoff: a run against servers that are all
        down fails at once (``tfclassify health --wait`` waits for one to come up).
        """
        for i, client in enumerate(self._clients):
            try:
                return await client.get_model_metadata(model, version=version, version_label=version_label)
            except TfclassifyError as exc:
                if exc.code not in RETRYABLE_CODES or i == len(self._clients) - 1:
                    raise
                log.warning("metadata from %s: %s; asking the next server", self.targets[i], exc)
        raise AssertionError("unreachable")

    async def classify(self, pixels: np.ndarray, model: str, **kwargs) -> ClassifyResult:
        """Classify ``pixels`` on some server, retrying elsewhere or later on retryable failures."""
        return await self._with_retries(
            lambda client: client.classify(pixels, model, omit_labels=True, **kwargs), f"{len(pixels)} images"
        )

    async def classify_encoded(self, files: list[bytes], model: str, **kwargs) -> ClassifyResult:
        """Classify encoded files (for a model that decodes them in its graph), with the retries of ``classify``."""
        return await self._with_retries(
            lambda client: client.classify_encoded(files, model, **kwargs), f"{len(files)} files"
        )

    async def _with_retries(self, call, what: str):
        attempt = 0
        while True:
            i = self._pick()
            self._busy[i] += 1
            try:
                return await call(self._clients[i])
            except TfclassifyError as exc:
                if exc.code not in RETRYABLE_CODES or attempt >= self.retry.max_retries:
                    raise
                delay = self.retry.delay(attempt)
                attempt += 1
                self.retries += 1
                if exc.code == grpc.StatusCode.UNAVAILABLE:
                    self._down_until[i] = time.monotonic() + max(delay, self.retry.base_s)
                log.warning("%s on %s: %s; retry %d of %d", what, self.targets[i], exc, attempt, self.retry.max_retries)
                if exc.code != grpc.StatusCode.UNAVAILABLE or not self._has_healthy():
                    await asyncio.sleep(delay)
            finally:
                self._busy[i] -= 1

    def _pick(self) -> int:
        now = time.monotonic()
        healthy = [i for i in range(len(self._clients)) if self._down_until[i] <= now]
        if not healthy:
            return min(range(len(self._clients)), key=lambda i: self._down_until[i])
        return min(healthy, key=lambda i: self._busy[i])

    def _has_healthy(self) -> bool:
        now = time.monotonic()
        return any(until <= now for until in self._down_until)
