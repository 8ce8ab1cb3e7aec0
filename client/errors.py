"""The client library's one exception type."""

from __future__ import annotations

import grpc


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
    def from_rpc_error(cls, error: grpc.RpcError) -> "TfclassifyError":
        """Wrap a ``grpc.RpcError`` raised by a stub call."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        exc = cls(code, details or "")
        exc.__cause__ = error
        return exc
