"""Domain errors, and the one table that maps them to gRPC status codes for each API."""

from __future__ import annotations

from collections.abc import Mapping

import grpc


class ServingError(Exception):
    """Base of the errors a request can end with; ``status_code`` says which gRPC status each API answers."""


class InvalidInputError(ServingError):
    """The request's images or options are malformed."""


class ModelNotFoundError(ServingError):
    """No such model, version or version label."""


class VersionLabelNotFoundError(ModelNotFoundError):
    """The model has no such version label."""


class SignatureNotFoundError(ServingError):
    """The request names a signature the model does not serve (TensorFlow Serving's ``signature_name``)."""


class FeedbackNotFoundError(ServingError):
    """No predictions are kept for the request id a Feedback call names."""


class AlreadyExistsError(ServingError):
    """The request id is already in use (predictions kept for feedback)."""


class ModelUnavailableError(ServingError):
    """The model exists but has no version ready to serve."""


class QueueFullError(ServingError):
    """The version's queue holds too many images: back off and retry."""


class ServerBusyError(ServingError):
    """The server (or this client's share of it) has as many requests in progress as it admits: back off."""


class DeadlineExceededError(ServingError):
    """The request's deadline passed before it could run."""


class InferenceError(ServingError):
    """TensorFlow failed on the request's batch (logged once, with its traceback, where it happened)."""


class ModelLoadError(Exception):
    """A SavedModel could not be loaded or does not look like an image classifier."""


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
