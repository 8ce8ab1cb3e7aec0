"""gRPC status codes as HTTP statuses, and the JSON error body every HTTP API answers with."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import orjson
from aiohttp import web

#: TensorFlow Serving's own table (model_servers/http_server.cc), used by every HTTP API here.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,  # the client closed the request (nginx's code, as TensorFlow Serving)
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
#: The gRPC code an HTTP status the front end answers by itself stands for (in the metrics and access log).
GRPC_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED, 409: grpc.StatusCode.ABORTED, 411: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED, 431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED, 501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC code an HTTP status stands for (INTERNAL for 5xx not in the table, else INVALID_ARGUMENT)."""
    return GRPC_CODE.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   code: grpc.StatusCode | None = None) -> web.Response:
    """``{"error": message, "code": ...}`` with ``status``: the error body of TensorFlow Serving's REST API and of
    the Open Inference Protocol's HTTP binding (their clients read ``error``), and the gRPC code's name, which
    says more than the HTTP status (FAILED_PRECONDITION and INVALID_ARGUMENT are both 400)."""
    code = code or grpc_code(status)
    return web.Response(status=status, body=orjson.dumps({"error": message, "code": code.name}),
                        content_type="application/json", headers=headers)


def text_header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, which must be UTF-8 text (it goes into protobuf strings and token comparisons); 400 when
    it is not (aiohttp hands undecodable bytes over as surrogates)."""
    value = headers.get(name)
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, f"the {name} header is not UTF-8 text") from None
    return value


class HttpError(Exception):
    """A request the front end refuses before any servicer sees it: an HTTP status and the message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
