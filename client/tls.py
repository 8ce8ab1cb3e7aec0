"""Client credentials: TLS or mutual TLS from PEM files, and bearer tokens for servers started with --auth-tokens."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import cast

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


def ssl_context(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """TLS for an ``https://`` address (the HTTP transport), from the same PEM files as ``channel_credentials``:
    ``ca`` (the system's trusted roots when None), and ``cert`` with ``key`` for mutual TLS."""
    if (cert is None) != (key is None):
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, "a client certificate needs its key, and a key its certificate")
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert), None if key is None else str(key))
    except FileNotFoundError as exc:
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ssl.SSLError, OSError) as exc:
        files = ", ".join(str(p) for p in (ca, cert, key) if p is not None)
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot use {files} for TLS: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a server started with ``--auth-tokens`` expects."""
    return (("authorization", f"Bearer {token}"),)


def _with_token(details, metadata: tuple[tuple[str, str], ...]):
    return details._replace(metadata=tuple(details.metadata or ()) + metadata)


class _CallDetails(grpc.ClientCallDetails):
    """A settable ``ClientCallDetails`` (grpc's own is an interface)."""

    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression

    def _replace(self, **changes) -> _CallDetails:
        fields = {"method": self.method, "timeout": self.timeout, "metadata": self.metadata,
                  "credentials": self.credentials, "wait_for_ready": self.wait_for_ready, "compression": self.compression}
        return _CallDetails(**{**fields, **changes})


def _details(d) -> _CallDetails:
    return _CallDetails(d.method, d.timeout, d.metadata, d.credentials, getattr(d, "wait_for_ready", None),
                        getattr(d, "compression", None))


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a (synchronous) channel."""

    def __init__(self, token: str) -> None:
        self._metadata = token_metadata(token)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_with_token(_details(details), self._metadata), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_with_token(_details(details), self._metadata), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(_with_token(_details(details), self._metadata), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(_with_token(_details(details), self._metadata), requests)


def aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding ``authorization: Bearer <token>`` to every call of an asyncio channel."""
    metadata = token_metadata(token)

    def add(details):
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*(tuple(details.metadata or ()) + metadata)),
                                          details.credentials, details.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            return await continuation(add(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):
            return await continuation(add(details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, requests):
            return await continuation(add(details), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, requests):
            return await continuation(add(details), requests)

    # grpc-stubs leave ClientInterceptor a placeholder that asks for a cast.
    return [cast(grpc.aio.ClientInterceptor, interceptor)
            for interceptor in (UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream())]
