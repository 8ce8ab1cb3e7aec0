"""Domain errors: what a request or a model load can end with. ``tfclassify.server.apis.statuses`` maps them to
each API's status codes."""

from __future__ import annotations


class ServingError(Exception):
    """Base of the errors a request can end with; ``apis.statuses.status_code`` says which status each API answers."""


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
