"""TLS and mutual TLS on the gRPC and HTTP ports, with certificates reloaded when their files change.

cert-manager (and most rotation tools) rewrite the certificate and key files in place. gRPC asks
``fetch`` before each new handshake whether the configuration changed; the HTTP port asks ``context``
for each new connection. Either check is one ``stat`` per file. Connections already open keep the
certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from tfclassify.server.settings import ServerSettings

log = logging.getLogger(__name__)


class FileStamps:
    """Tells whether any of some files changed (modification time or size) since the last accepted look."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.current = self.read()

    def read(self) -> list[tuple[int, int]]:
        stamps = []
        for path in self.files:
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return stamps


class ReloadingCertificates:
    """The server's certificate, key and (for mutual TLS) client CA, read again when a file changes."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamps = FileStamps([p for p in (cert, key, client_ca) if p is not None])
        self.initial = self._configuration()  # unreadable files at start: the server does not start

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up rotated files on new connections; a client certificate signed by
        ``client_ca`` is required when one is set."""
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=self.client_ca is not None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last one was read, else None (gRPC keeps it)."""
        stamp = self._stamps.read()
        if stamp == self._stamps.current:
            return None
        try:
            configuration = self._configuration()
        except (OSError, ValueError) as exc:  # half-written during a rotation: keep serving the old one
            log.warning("TLS files changed but cannot be read yet (%s); keeping the current certificate", exc)
            return None
        self._stamps.current = stamp
        log.info("TLS certificate reloaded from %s", self.cert)
        return configuration

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key, cert = self.key.read_bytes(), self.cert.read_bytes()
        if b"PRIVATE KEY" not in key or b"CERTIFICATE" not in cert:
            raise ValueError(f"{self.cert} and {self.key} must be a PEM certificate and its PEM private key")
        root = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=root)


class ReloadingSslContext:
    """An ``ssl.SSLContext`` for an HTTP server from the same files, built again when one changes.

    With ``client_ca``, clients must present a certificate it signed (Prometheus's ``tls_config`` can;
    the kubelet's HTTPS probes cannot, so probes of a mutual-TLS port must use gRPC health instead).
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamps = FileStamps([p for p in (cert, key, client_ca) if p is not None])
        self._lock = threading.Lock()  # connections are accepted on one thread, but be safe
        self._context = self._build()  # unreadable files at start: the server does not start

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: rebuilt first if a file changed and can be read."""
        with self._lock:
            stamp = self._stamps.read()
            if stamp != self._stamps.current:
                try:
                    self._context = self._build()
                    log.info("HTTP TLS certificate reloaded from %s", self.cert)
                except (OSError, ssl.SSLError) as exc:
                    log.warning("TLS files changed but cannot be read yet (%s); keeping the current certificate", exc)
                else:
                    self._stamps.current = stamp
            return self._context

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
            # No session tickets: a resumed session skips the client certificate check, which would outlive
            # a rotation of the client CA by the tickets' lifetime.
            context.options |= ssl.OP_NO_TICKET
            context.num_tickets = 0
        return context


def reloading_server_context(files: ReloadingSslContext) -> ssl.SSLContext:
    """One ``ssl.SSLContext`` for an asyncio server (which takes a single context) that serves each new
    connection with ``files``' current one: its callback, which OpenSSL runs at every ClientHello with or
    without a server name, switches the connection to the context rebuilt after a rotation."""
    front = files.context()

    def current(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        latest = files.context()
        if latest is not context:
            connection.context = latest

    front.sni_callback = current  # asyncio passes an SSLObject where typeshed says SSLSocket
    return front


def rest_port_tls(settings: ServerSettings) -> ReloadingSslContext | None:
    """TLS for the HTTP/REST port, as on the gRPC port: with ``--tls-cert``, and mutual with ``--tls-client-ca``."""
    if settings.tls_cert is None:
        return None
    return ReloadingSslContext(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


#: The values of ``--metrics-tls``.
HTTP_TLS_MODES = ("off", "tls", "mtls")


def check_http_tls(mode: str, cert: Path | None, client_ca: Path | None) -> None:
    """``ValueError`` saying what is missing when ``--metrics-tls MODE`` cannot work with these files."""
    if mode not in HTTP_TLS_MODES:
        raise ValueError(f"--metrics-tls must be off, tls or mtls, not {mode!r}")
    if mode != "off" and cert is None:
        raise ValueError(f"--metrics-tls {mode} needs --tls-cert and --tls-key")
    if mode == "mtls" and client_ca is None:
        raise ValueError("--metrics-tls mtls needs --tls-client-ca")


def http_tls(settings: ServerSettings) -> ReloadingSslContext | None:
    """The HTTP port's TLS for ``--metrics-tls`` (None: plain HTTP)."""
    check_http_tls(settings.metrics_tls, settings.tls_cert, settings.tls_client_ca)
    if settings.metrics_tls == "off":
        return None
    return ReloadingSslContext(settings.tls_cert, settings.tls_key,
                               settings.tls_client_ca if settings.metrics_tls == "mtls" else None)
