"""Client credentials for a server with TLS or mutual TLS, from PEM files."""

from __future__ import annotations

from pathlib import Path

import grpc

from tfclassify.client.errors import TfclassifyError


def channel_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials: ``ca`` is the CA that signed the server's certificate (the system's trusted roots when
    None); ``cert`` and ``key`` are this client's certificate and key, for servers that require them (mutual
    TLS). Returns None, a plain-text channel, when no file is given."""
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, "a client certificate needs its key, and a key its certificate")

    def read(path: str | Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read {path}: {exc.strerror}") from None

    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))
