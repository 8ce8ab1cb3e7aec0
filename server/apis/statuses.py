"""The one table that maps the serving core's errors to gRPC status codes, for each API."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from tfclassify.server.core.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FeedbackNotFoundError,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    QueueFullError,
    ServerBusyError,
    ServingError,
    SignatureNotFoundError,
    VersionLabelNotFoundError,
)

Codes = Mapping[type[ServingError], grpc.StatusCode]

#: The status of each error, in every API unless the API's own convention says otherwise (below).
STATUS_CODES: Codes = {
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    FeedbackNotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    SignatureNotFoundError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelUnavailableError: grpc.StatusCode.UNAVAILABLE,
    QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    InferenceError: grpc.StatusCode.INTERNAL,
}

#: Where a protocol answers differently: TensorFlow Serving refuses an unknown version label as a bad argument.
API_STATUS_CODES: Mapping[str, Codes] = {
    "tensorflow_serving": {VersionLabelNotFoundError: grpc.StatusCode.INVALID_ARGUMENT},
}


def status_code(exc: ServingError, api: str) -> grpc.StatusCode:
    """The status ``api`` answers ``exc`` with: the nearest of its classes in the tables (INTERNAL if none)."""
    overrides = API_STATUS_CODES.get(api, {})
    for cls in type(exc).__mro__:
        code = overrides.get(cls) or STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
