"""Domain errors and their one mapping to gRPC status codes."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base of the errors a request can end with; ``code`` is its gRPC status."""

    code = grpc.StatusCode.INTERNAL


class InvalidInputError(ServingError):
    """The request's images or options are malformed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFoundError(ServingError):
    """No such model, version or version label."""

    code = grpc.StatusCode.NOT_FOUND


class VersionLabelNotFoundError(ModelNotFoundError):
    """The model has no such version label."""


class ModelUnavailableError(ServingError):
    """The model exists but has no version ready to serve."""

    code = grpc.StatusCode.UNAVAILABLE


class ModelLoadError(Exception):
    """A SavedModel could not be loaded or does not look like an image classifier."""


class QueueFullError(ServingError):
    """The version's queue holds too many images: back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(ServingError):
    """The request's deadline passed before it could run."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
