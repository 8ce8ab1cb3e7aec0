"""The ports a server listens on: a clear error when one cannot be bound, holding a chosen port for
worker processes, and the port file that tells scripts and tests which ports were bound."""

from __future__ import annotations

import json
import socket
from pathlib import Path


class BindError(OSError):
    """A port the server must listen on cannot be bound (in use, or not allowed)."""


def bind_message(host: str, port: int, what: str, reason: str | None) -> str:
    """One line for the operator: which port, why, and which flag chooses another."""
    flag = {"gRPC": "--grpc-port", "HTTP/REST": "--http-port"}.get(what, "--metrics-port")
    return f"cannot listen on {host}:{port} for {what}: {(reason or 'not allowed').lower()} (choose another port with {flag})"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int, what: str = "gRPC") -> None:
    """``BindError`` unless nothing else holds ``host:port``: a bind without SO_REUSEPORT fails while any socket,
    even one bound with SO_REUSEPORT by another server, holds it (SO_REUSEADDR, as gRPC sets, lets it pass
    connections left in TIME_WAIT)."""
    if port == 0:
        return
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BindError(bind_message(host, port, what, exc.strerror)) from exc


def reserve_port(host: str, port: int, what: str = "gRPC") -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT, as our workers' gRPC binds: holds the
    port (a free one for port 0) until the worker processes have bound it too. ``BindError`` when anything else
    holds it: SO_REUSEPORT would otherwise let the workers share another server's port, and the kernel would
    split connections between the two."""
    check_port_free(host, port, what)
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(bind_message(host, port, "gRPC", exc.strerror)) from exc
    return sock


def write_port_file(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (temporary name, then rename): readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    tmp.replace(path)
