"""The server's HTTP port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

Only these paths answer (404 elsewhere), so an HTTP probe pointed at the
wrong path fails instead of passing on any URL. ``/metrics`` is
prometheus_client's own WSGI app (content negotiation, gzip).

- ``/healthz`` (liveness): 200 while the server's event loop is responsive;
  503 when it has not run for ``stall_s`` seconds (a wedged process a
  restart would cure). It does not depend on the models.
- ``/readyz`` (readiness): 200 when every model has a version serving and the
  server is not shutting down, else 503 and which models are not ready.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from tfclassify.common.ports import GRPC_PORT_HEADER
from tfclassify.server.tls import ReloadingSslContext

log = logging.getLogger(__name__)

#: /healthz fails when the event loop's heartbeat is older than this.
DEFAULT_STALL_S = 10.0


class Heartbeat:
    """Beaten by the event loop (``beat``); read by the HTTP thread (``age``)."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    #: Set for HTTPS: each accepted connection is wrapped with its current context.
    tls: ReloadingSslContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake happens on the connection's own thread (first read), so a client that stalls
            # in it holds only that thread, never the accepting one.
            sock = self.tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that speaks plain HTTP to HTTPS, fails the handshake or hangs up is not a server error."""
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class _QuietHandler(WSGIRequestHandler):
    #: Seconds a connection may stay silent (a slow or stuck client must not hold a thread for ever).
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Probes every few seconds would flood the log."""


def make_app(registry: CollectorRegistry, heartbeat: Heartbeat, not_ready: Callable[[], list[str]],
             grpc_port: int | None = None, stall_s: float = DEFAULT_STALL_S,
             notes: Callable[[], list[str]] | None = None):
    """The WSGI app: ``/metrics``, ``/healthz``, ``/readyz``; ``not_ready()`` names what keeps the server unready,
    ``notes()`` what ``/readyz`` adds as lines of its own without changing its status (a bucket repository that does
    not answer while the versions already fetched serve). Every answer names ``grpc_port`` in a header, so a gRPC
    client pointed here by mistake can say where to go."""
    metrics = make_wsgi_app(registry)
    if grpc_port is None:
        return _routes(metrics, heartbeat, not_ready, stall_s, notes)
    routes = _routes(metrics, heartbeat, not_ready, stall_s, notes)
    header = (GRPC_PORT_HEADER, str(grpc_port))

    def app(environ: dict, start_response) -> Iterable[bytes]:
        def start_with_header(status: str, headers: list, exc_info=None):
            return start_response(status, [*headers, header], exc_info)

        return routes(environ, start_with_header)

    return app


def _routes(metrics, heartbeat: Heartbeat, not_ready: Callable[[], list[str]], stall_s: float,
            notes: Callable[[], list[str]] | None = None):
    def app(environ: dict, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            age = heartbeat.age()
            if age > stall_s:
                return _text(start_response, "503 Service Unavailable", f"event loop stalled for {age:.1f} s\n")
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            missing = not_ready()
            extra = "".join(f"note: {line}\n" for line in (notes() if notes is not None else []))
            if missing:
                return _text(start_response, "503 Service Unavailable",
                             "not ready: " + "; ".join(missing) + "\n" + extra)
            return _text(start_response, "200 OK", "ready\n" + extra)
        return _text(start_response, "404 Not Found", "not found: the paths are /metrics, /healthz and /readyz\n")

    return app


def start_http_server(host: str, port: int, app,
                      tls: ReloadingSslContext | None = None) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``app`` on ``host:port`` (HTTPS with ``tls``) from a daemon thread; ``OSError`` when the port
    cannot be bound."""
    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    server.tls = tls
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread


def _text(start_response, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
