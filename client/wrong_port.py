"""What to tell a caller whose address answers HTTP/1 instead of gRPC: most often a tfclassify server's
metrics/HTTP port given where its gRPC port belongs.

gRPC itself only says ``Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got frame type 79)``.
tfclassify's HTTP port names the gRPC port in a header on every answer (``GRPC_PORT_HEADER``), so one plain GET
turns that into "this is the metrics/HTTP port; the gRPC port is 8500".
"""

from __future__ import annotations

import urllib.error
import urllib.request

from tfclassify.common.ports import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, GRPC_PORT_HEADER

#: What gRPC core says when the peer answered with something that is not HTTP/2.
HTTP1_SIGNS = ("Failed parsing HTTP/2", "Expected SETTINGS frame")


def answers_http1(details: str) -> bool:
    """Whether a failed call's ``details`` say the address answered, but not with HTTP/2 (so not gRPC)."""
    return any(sign in details for sign in HTTP1_SIGNS)


def host_and_port(address: str) -> tuple[str, str] | None:
    """``(host, port)`` of ``HOST:PORT``, ``[V6]:PORT``, ``dns:HOST:PORT``, ``dns:///HOST:PORT`` or
    ``dns://RESOLVER/HOST:PORT``; None for other targets (``unix:``, a bare IPv6 address, no port)."""
    target = address
    for scheme in ("dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            if target.startswith("//"):  # an authority (a DNS resolver), possibly empty, then the name
                target = target[2:].partition("/")[2]
            break
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host or (":" in host and not host.startswith("[")):
        return None
    return host, port


def explain(address: str, timeout_s: float = 2.0) -> str:
    """A one-line message for a gRPC call to ``address`` that reached an HTTP/1 server (blocks up to
    ``timeout_s`` to ask that server for our header)."""
    parts = host_and_port(address)
    grpc_port = None
    if parts is not None:
        host, port = parts
        url_host = host if host.startswith("[") or ":" not in host else f"[{host}]"
        try:
            with urllib.request.urlopen(f"http://{url_host}:{port}/healthz", timeout=timeout_s) as answer:
                grpc_port = answer.headers.get(GRPC_PORT_HEADER)
        except urllib.error.HTTPError as answer:  # 503 while not ready: still our header
            grpc_port = answer.headers.get(GRPC_PORT_HEADER)
        except (OSError, ValueError):
            pass
    if grpc_port and grpc_port.isdigit() and parts is not None:
        return (f"{address} answers HTTP/1, not gRPC: it is a tfclassify server's metrics/HTTP port, and that server "
                f"listens for gRPC on port {grpc_port} (try {parts[0]}:{grpc_port}, unless a proxy or port mapping "
                "publishes it elsewhere)")
    return (f"{address} answers HTTP/1, not gRPC: it looks like an HTTP port (a tfclassify server's metrics port "
            f"is {DEFAULT_METRICS_PORT} by default); give the server's gRPC port ({DEFAULT_GRPC_PORT} by default)")
