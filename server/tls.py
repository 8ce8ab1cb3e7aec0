"""TLS and mutual TLS on the gRPC port, with certificates reloaded when their files change.

cert-manager (and most rotation tools) rewrite the certificate and key files in place. gRPC asks
``fetch`` before each new handshake whether the configuration changed, and that check is one ``stat``
per file. Connections already open keep the certificate they started with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class ReloadingCertificates:
    """The server's certificate, key and (for mutual TLS) client CA, read again when a file changes."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.files = [p for p in (cert, key, client_ca) if p is not None]
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = self._stamps()
        self.initial = self._configuration()  # unreadable files at start: the server does not start

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up rotated files on new connections; a client certificate signed by
        ``client_ca`` is required when one is set."""
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=self.client_ca is not None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last one was read, else None (gRPC keeps it)."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return None
        try:
            configuration = self._configuration()
        except (OSError, ValueError) as exc:  # half-written during a rotation: keep serving the old one
            log.warning("TLS files changed but cannot be read yet (%s); keeping the current certificate", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self.cert)
        return configuration

    def _stamps(self) -> list[tuple[int, int]]:
        stamps = []
        for path in self.files:
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return stamps

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key, cert = self.key.read_bytes(), self.cert.read_bytes()
        if b"PRIVATE KEY" not in key or b"CERTIFICATE" not in cert:
            raise ValueError(f"{self.cert} and {self.key} must be a PEM certificate and its PEM private key")
        root = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=root)
