"""The client library's one exception type."""

from __future__ import annotations

import grpc

from tfclassify.client.wrong_port import answers_http1, explain


class TfclassifyError(Exception):
    """A call to the server failed.

    ``code`` is the gRPC status code (``grpc.StatusCode``) and ``details``
    the server's message; the original ``grpc.RpcError`` is the cause.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, address: str | None = None) -> TfclassifyError:
        """Wrap a ``grpc.RpcError`` raised by a stub call to ``address``. A call that reached an HTTP/1 server
        (tfclassify's metrics port, say) gets a message that says so and names the gRPC port when it can: this
        asks that server (a blocking GET of up to 2 s; asyncio code passes ``details`` from ``explain`` in a
        thread instead)."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else str(error)) or ""
        if address is not None and code == grpc.StatusCode.UNAVAILABLE and answers_http1(details):
            details = explain(address)
        return cls.wrapping(error, code, details)

    @classmethod
    def wrapping(cls, error: grpc.RpcError, code: grpc.StatusCode, details: str) -> TfclassifyError:
        """A ``TfclassifyError`` with ``code`` and ``details`` whose cause is ``error``."""
        exc = cls(code, details)
        exc.__cause__ = error
        return exc
