"""The HTTP/1.1 transport of ``ClassifierClient`` for ``http://`` and ``https://`` addresses (standard library only).

The server's HTTP port answers our Classifier service's unary methods at ``POST /tfclassify.v1.Classifier/{Method}``
with the request message as an ``application/x-protobuf`` body, and a failure as ``{"error": ..., "code": ...}``
where ``code`` is the gRPC status code's name: this transport sends the same messages the gRPC stub would, and
raises ``TfclassifyError`` with the same codes. One keep-alive connection per thread; a deadline travels as
the ``Request-Timeout`` header and is enforced here too; refused calls are retried as gRPC's service config
retries them (``RETRIED_METHODS`` on ``RETRYABLE_CODES``, full-jitter backoff, within the deadline).
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlsplit

import grpc
from google.protobuf.message import DecodeError, Message

from tfclassify.client.errors import TfclassifyError
from tfclassify.client.requests import BACKOFF_BASE_S, BACKOFF_CAP_S, RETRIED_METHODS, RETRYABLE_CODES, invalid

HTTP_SCHEMES = ("http://", "https://")
SERVICE_PATH = "/tfclassify.v1.Classifier"
PROTOBUF = "application/x-protobuf"
#: Threads (each with its own connection) that run ``classify_async`` and the requests of a split batch.
HTTP_THREADS = 8
#: The gRPC code of an HTTP status whose body is not our error JSON (a proxy's answer, say): the server's table.
_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED, 409: grpc.StatusCode.ABORTED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED, 499: grpc.StatusCode.CANCELLED, 501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
#: A reused keep-alive connection the server closed meanwhile fails with these before any answer: sent again
#: once on a new connection (the server never saw the request).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

M = TypeVar("M", bound=Message)


def is_http_url(address: object) -> bool:
    """Whether ``address`` is an ``http://`` or ``https://`` URL (the HTTP transport) rather than a gRPC target."""
    return isinstance(address, str) and address.lower().startswith(HTTP_SCHEMES)


@dataclass(frozen=True)
class HttpTarget:
    """Where an ``http(s)://HOST[:PORT][/PREFIX]`` URL points (a path prefix for servers behind a proxy)."""

    url: str
    tls: bool
    host: str
    port: int
    prefix: str


def parse_url(address: str) -> HttpTarget:
    """The target of ``address``; ``TfclassifyError`` (INVALID_ARGUMENT) for anything but a plain base URL."""
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise invalid(f"server address {address!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"server address {address!r} is not http(s)://HOST:PORT (e.g. http://localhost:8501)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise invalid(f"server address {address!r}: give http(s)://HOST:PORT[/PREFIX] only, without a query, "
                      "fragment or user (tokens go in token=)")
    return HttpTarget(address.rstrip("/"), scheme == "https", parts.hostname,
                      port or (443 if scheme == "https" else 80), parts.path.rstrip("/"))


class HttpTransport:
    """Unary calls of the Classifier service over HTTP/1.1, and the server's readiness.

    ``ssl_context`` is used for ``https://`` (the system's trusted roots when None); ``token`` is sent as
    ``Authorization: Bearer``; ``retries`` (0-4) as ``ClassifierClient``'s.
    """

    def __init__(self, address: str, *, ssl_context: ssl.SSLContext | None = None, token: str | None = None,
                 retries: int = 0) -> None:
        self.target = parse_url(address)
        if ssl_context is not None and not self.target.tls:
            raise invalid(f"server address {address!r} is plain http://: TLS options need an https:// address")
        self._ssl = (ssl_context or ssl.create_default_context()) if self.target.tls else None
        self._token = token
        self.retries = retries
        self._local = threading.local()  # this thread's keep-alive connection
        self._connections: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return self.target.url

    # -- calls -----------------------------------------------------------------
    def call(self, method: str, request: Message, response_class: type[M], deadline: float) -> M:
        """``method``'s answer to ``request`` by ``deadline`` (``time.monotonic()``), with retries of refused calls."""
        attempt = 0
        while True:
            try:
                return self._call_once(method, request, response_class, deadline)
            except TfclassifyError as exc:
                if method not in RETRIED_METHODS or exc.code not in RETRYABLE_CODES or attempt >= self.retries:
                    raise
                delay = random.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
                attempt += 1

    def submit(self, function: Callable[..., M], *args: object) -> Future[M]:
        """Run ``function(*args)`` on the transport's threads (created on first use)."""
        with self._lock:
            if self._closed:
                raise TfclassifyError(grpc.StatusCode.CANCELLED, "the client is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(HTTP_THREADS, thread_name_prefix="tfclassify-http")
            return self._pool.submit(function, *args)

    def get_status(self, path: str, deadline: float) -> int:
        """The HTTP status of ``GET path`` (for health), with the token; ``TfclassifyError`` when there is no answer,
        and when the token is refused (401, 403: no wait would change that)."""
        status, body = self._exchange("GET", path, None, self._auth_headers(), deadline)
        if status in (401, 403):
            raise error_from_answer(status, body)
        return status

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def close(self) -> None:
        """Stop the threads (calls not started are cancelled) and close every connection."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for connection in list(self._connections):
            connection.close()

    # -- one exchange ------------------------------------------------------------
    def _call_once(self, method: str, request: Message, response_class: type[M], deadline: float) -> M:
        headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF, **self._auth_headers()}
        status, body = self._exchange("POST", f"{SERVICE_PATH}/{method}", request.SerializeToString(), headers,
                                      deadline)
        if status != 200:
            raise error_from_answer(status, body)
        try:
            return response_class.FromString(body)
        except DecodeError:
            raise TfclassifyError(grpc.StatusCode.INTERNAL, f"{self.url} answered {method} with {len(body)} bytes "
                                  f"that are not a {response_class.DESCRIPTOR.full_name}") from None

    def _exchange(self, verb: str, path: str, body: bytes | None, headers: dict[str, str],
                  deadline: float) -> tuple[int, bytes]:
        """(status, body) of one request, on this thread's connection; errors as ``TfclassifyError``."""
        for fresh_try in (False, True):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TfclassifyError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            connection, reused = self._connection()
            connection.timeout = left  # connect; every read and write below too
            if connection.sock is not None:
                connection.sock.settimeout(left)
            try:
                connection.request(verb, self.target.prefix + path, body,
                                   {**headers, "Request-Timeout": f"{max(left, 0.001):.3f}"})
                response = connection.getresponse()
                data = response.read()
            except _STALE as exc:
                self._drop(connection)
                if reused and not fresh_try:
                    continue
                raise self._unreachable(exc) from exc
            except TimeoutError:
                self._drop(connection)  # its answer may still come: the connection cannot carry another
                raise TfclassifyError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise self._unreachable(exc) from exc
            if response.will_close:
                self._drop(connection)
            if time.monotonic() > deadline:  # a slow answer arrived, but late: as gRPC, the deadline wins
                raise TfclassifyError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            return response.status, data
        raise AssertionError("unreachable")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it carried a request before (a new one when there is none)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        if self._closed:
            raise TfclassifyError(grpc.StatusCode.CANCELLED, "the client is closed")
        t = self.target
        if t.tls:
            connection = http.client.HTTPSConnection(t.host, t.port, context=self._ssl)
        else:
            connection = http.client.HTTPConnection(t.host, t.port)
        self._local.connection = connection
        self._connections.add(connection)
        return connection, False

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def _unreachable(self, exc: Exception) -> TfclassifyError:
        """UNAVAILABLE, saying why no answer came (as gRPC's "failed to connect")."""
        if isinstance(exc, ssl.SSLError):
            why = f"TLS failed: {exc.reason or exc}"
        elif isinstance(exc, (http.client.BadStatusLine, http.client.RemoteDisconnected)):
            why = ("the connection closed without an HTTP/1.1 answer (a gRPC port? give the server's HTTP port, "
                   "8501 by default)")
        elif isinstance(exc, http.client.HTTPException):
            why = f"not an HTTP/1.1 answer ({type(exc).__name__})"
        else:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        error = TfclassifyError(grpc.StatusCode.UNAVAILABLE, f"failed to connect to {self.url}: {why}")
        error.__cause__ = exc
        return error


def error_from_answer(status: int, body: bytes) -> TfclassifyError:
    """The ``TfclassifyError`` of an answer other than 200: the code and message of the server's error JSON, or
    the code of the HTTP status when the body is not one (a proxy's page, say)."""
    try:
        payload = json.loads(body)
        return TfclassifyError(grpc.StatusCode[payload["code"]], str(payload["error"]))
    except (ValueError, KeyError, TypeError):
        code = _STATUS_CODES.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN)
        text = body[:200].decode("utf-8", "replace").strip()
        return TfclassifyError(code, f"HTTP {status}" + (f": {text}" if text else ""))


def model_ready_path(model: str) -> str:
    """The Open Inference Protocol's readiness path of a model."""
    return f"/v2/models/{quote(model, safe='')}/ready"
