"""Checks and request building shared by the sync and asyncio clients.

Every bad argument raises the library's one exception type,
``TfclassifyError`` with ``INVALID_ARGUMENT``, before anything is sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import cast

import grpc
import numpy as np

from tfclassify.client.errors import TfclassifyError
from tfclassify.client.results import ClassifyResult
from tfclassify.common.tensors import to_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb

#: gRPC name-resolver schemes passed through as they are (``dns:///host:port`` and friends).
_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.%\w]+\]|[^:\[\]/\s]+):(\d{1,5})$")


def invalid(message: str) -> TfclassifyError:
    """The error for a bad argument to the library."""
    return TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_target(address: str) -> str:
    """``address`` if it is ``HOST:PORT``, ``[IPv6]:PORT`` or a gRPC URI with a port; ``TfclassifyError`` otherwise.

    gRPC itself would take ``localhost`` as ``localhost:443``: never what a tfclassify user means.
    """
    if not isinstance(address, str) or not address:
        raise invalid(f"server address must be a non-empty string HOST:PORT, got {address!r}")
    if address.startswith(_URI_SCHEMES):
        if address.startswith(("dns:", "ipv4:", "ipv6:")):
            hosts = address.split(":", 1)[1].lstrip("/").split(",")
            if address.startswith("dns:") and "/" in hosts[0]:
                hosts = [hosts[0].split("/", 1)[1]]  # dns://AUTHORITY/host:port
            missing = [h for h in hosts if not _HOST_PORT.match(h)]
            if missing:
                raise invalid(f"server address {address!r}: {missing[0]!r} has no port (expected HOST:PORT)")
        return address
    if not _HOST_PORT.match(address):
        raise invalid(
            f"server address {address!r} is not HOST:PORT (e.g. localhost:8500, [::1]:8500 or dns:///name:8500)"
        )
    return address


def model_spec(name: str, version: int | None = None, version_label: str | None = None) -> pb.ModelSpec:
    """A ``ModelSpec`` naming a model and, optionally, a version or a label."""
    if not isinstance(name, str) or not name:
        raise invalid(f"model must be a non-empty model name, got {name!r}")
    if version is not None and version_label is not None:
        raise invalid("give a version or a version label, not both")
    spec = pb.ModelSpec(name=name)
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
            raise invalid(f"version must be a positive integer, got {version!r}")
        spec.version = int(version)
    elif version_label is not None:
        spec.version_label = version_label
    return spec


def as_image_batch(images: object) -> np.ndarray:
    """Check that ``images`` is a batch the API carries and return it as an array.

    A batch is ``[N, H, W]`` (grayscale), ``[N, H, W, C]`` (C = 1, 3 or 4 channels) or flattened
    ``[N, H*W*C]``, of uint8 pixels (float32 for float-input models). Nothing is guessed: a single image is a
    batch of one (``image[np.newaxis]``). The server checks the size and channels against the model.
    """
    if not isinstance(images, np.ndarray):
        raise invalid(
            f"images must be a numpy array of uint8 pixels [N, H, W] or [N, H, W, C], got {type(images).__name__}: "
            "convert with np.asarray(images, dtype=np.uint8)"
        )
    if images.dtype != np.uint8 and images.dtype != np.float32:
        raise invalid(
            f"images must be uint8 pixels 0-255 (or float32 for float-input models), got {images.dtype}: "
            "convert with images.astype(np.uint8)"
        )
    shape = list(images.shape)
    if images.ndim == 1:
        raise invalid(f"images {shape} is one flattened image; send a batch: images[np.newaxis] ([1, {shape[0]}])")
    if images.ndim == 2 and not any(shape[1] % c == 0 and math.isqrt(shape[1] // c) ** 2 * c == shape[1]
                                    for c in (1, 3)):
        raise invalid(
            f"a 2-D array is a batch of flattened square images [N, H*W*C], but {shape} rows of {shape[1]} pixels "
            "are not square images; to send one image [H, W], send image[np.newaxis]"
        )
    if images.ndim not in (2, 3, 4) or (images.ndim == 4 and shape[3] not in (1, 3, 4)):
        raise invalid(f"images must be a batch [N, H, W], [N, H, W, C] (C = 1, 3 or 4) or [N, H*W*C], got shape {shape}")
    if shape[0] == 0:
        raise invalid("images is an empty batch: send 1 or more images")
    return images


def check_top_k(top_k: object) -> int:
    """``top_k`` as an int >= 0."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise invalid(f"top_k must be an integer >= 0 (0: no ranked classes), got {top_k!r}")
    return int(top_k)


def classify_request(
    images: object,
    model: str,
    version: int | None,
    version_label: str | None,
    top_k: int,
    return_probabilities: bool,
    omit_labels: bool,
    true_classes: object = None,
    keep_for_feedback: bool = False,
    request_id: str = "",
) -> pb.ClassifyRequest:
    """A checked ``ClassifyRequest`` for a batch of pixels (``true_classes``, ``keep_for_feedback``: see
    ``ClassifierClient.classify``)."""
    request = pb.ClassifyRequest(
        model_spec=model_spec(model, version, version_label),
        top_k=check_top_k(top_k),
        return_probabilities=bool(return_probabilities),
        omit_labels=bool(omit_labels),
        keep_for_feedback=bool(keep_for_feedback),
        request_id=request_id,
    )
    if keep_for_feedback and not request_id:
        raise invalid("keep_for_feedback needs a request_id: Feedback finds the predictions by it")
    batch = as_image_batch(images)
    if true_classes is not None:
        request.true_classes.extend(check_true_classes(true_classes, len(batch)))
    to_tensor_proto(batch, out=request.tensor)  # content last: see to_tensor_proto
    return request


def feedback_request(model: str, request_id: str, true_classes: object) -> pb.FeedbackRequest:
    """A checked ``FeedbackRequest``: the true classes of a request kept with ``keep_for_feedback``."""
    classes = np.asarray(true_classes)
    return pb.FeedbackRequest(model_name=model, request_id=request_id,
                              true_classes=check_true_classes(classes, classes.size))


def check_true_classes(true_classes: object, images: int) -> list[int]:
    """``true_classes`` as a list of ints, one per image (-1 where unknown)."""
    array = np.asarray(true_classes)
    if array.ndim != 1 or len(array) != images or (len(array) and array.dtype.kind not in "iu"):
        raise invalid(f"true_classes must be {images} integer class indices, one per image (-1 where unknown), "
                      f"got {array.dtype} {list(array.shape)}")
    return array.tolist()


def encoded_request(
    images: Sequence[object], model: str, version: int | None, version_label: str | None, top_k: int,
    return_probabilities: bool, true_classes: object = None,
) -> pb.ClassifyRequest:
    """A checked ``ClassifyRequest`` for encoded image files (``true_classes``: as for pixels)."""
    check_files(images)
    request = pb.ClassifyRequest(
        model_spec=model_spec(model, version, version_label),
        encoded=pb.EncodedImages(images=[bytes(cast("bytes | bytearray", i)) for i in images]),  # checked above
        top_k=check_top_k(top_k),
        return_probabilities=bool(return_probabilities),
    )
    if true_classes is not None:
        request.true_classes.extend(check_true_classes(true_classes, len(images)))
    return request


def check_files(images: Sequence[object]) -> None:
    """Refuse anything but a non-empty sequence of ``bytes`` (one file each)."""
    if isinstance(images, (bytes, str)) or not all(isinstance(i, (bytes, bytearray)) for i in images):
        raise invalid("encoded images must be a sequence of bytes objects, one file each")
    if not images:
        raise invalid("no encoded images: send 1 or more files")


def encoded_requests(images: Sequence[bytes], model: str, version: int | None, version_label: str | None,
                     top_k: int, return_probabilities: bool, true_classes: object, max_request_bytes: int
                     ) -> list[pb.ClassifyRequest]:
    """Checked ``ClassifyRequest`` messages for encoded files, of at most ``max_request_bytes`` of files each."""
    # Every argument checked before any request is built: a refusal costs no copy of the files.
    check_files(images)
    model_spec(model, version, version_label)
    check_top_k(top_k)
    truth = None if true_classes is None else np.asarray(check_true_classes(true_classes, len(images)))
    return [encoded_request(images[part], model, version, version_label, top_k, return_probabilities,
                            None if truth is None else truth[part])
            for part in byte_slices([len(i) for i in images], max_request_bytes)]


#: gRPC sends a call at most 5 times in all.
MAX_RETRIES = 4
#: The methods gRPC may send again: Classify and the reads. Not Feedback, which the server takes once (a retry
#: after it took the first would be refused), nor the stream.
RETRIED_METHODS = ("Classify", "GetModelMetadata", "ListModels", "GetModelStatus")
#: What a server answers when it did not take the call, so that sending it again is safe: busy
#: (RESOURCE_EXHAUSTED, its admission limits), not ready, starting, draining or unreachable (UNAVAILABLE), and
#: CANCELLED, which gRPC core itself answers when it refuses a call past ``--max-pending-calls``. The library's
#: retries and ``tfclassify score``'s both use it. A call the caller cancels is never retried.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
)
#: Backoff before a retry: a random wait up to BASE x 2^n seconds, at most CAP (full jitter).
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0


#: The most bytes of images one Classify request carries unless the caller says otherwise: a quarter of gRPC's
#: (and the server's) 64 MiB message limit, so that a request stays well under it and several fit the server's
#: --max-request-bytes-in-progress (128 MiB) at once. 111 images of 224 x 224 x 3 uint8; 21,000 of 28 x 28.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: Requests of one split batch in flight at once (the synchronous client's ``classify``, the asyncio client's).
SPLIT_IN_FLIGHT = 4


def check_max_request_bytes(max_request_bytes: object) -> int:
    """``max_request_bytes`` if it is a whole number of 1 or more."""
    if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1:
        raise invalid(f"max_request_bytes must be a whole number of bytes >= 1, got {max_request_bytes!r}")
    return max_request_bytes


def pixel_slices(images: np.ndarray, max_request_bytes: int) -> list[slice]:
    """``images`` (a checked batch) in consecutive slices of at most ``max_request_bytes`` of pixels each; an image
    larger than that goes alone."""
    per_image = max(1, images[:1].nbytes)
    step = max(1, max_request_bytes // per_image)
    return [slice(i, min(i + step, len(images))) for i in range(0, len(images), step)]


def byte_slices(sizes: Sequence[int], max_bytes: int) -> list[slice]:
    """Consecutive slices of items of ``sizes`` bytes, each at most ``max_bytes`` in all; an item larger than that
    goes alone (encoded files, whose sizes differ)."""
    slices, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > max_bytes:
            slices.append(slice(start, i))
            start, total = i, 0
        total += size
    if len(sizes) > start:
        slices.append(slice(start, len(sizes)))
    return slices


def merge_results(parts: Sequence[ClassifyResult]) -> ClassifyResult:
    """The results of the requests of one split batch, as one result in the batch's order. ``version`` is the
    first request's (they differ only when the model's version changed while the batch was answered)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    probabilities = None if first.probabilities is None else np.concatenate([p.probabilities for p in parts])
    return ClassifyResult(
        model=first.model, version=first.version,
        classes=np.concatenate([p.classes for p in parts]), scores=np.concatenate([p.scores for p in parts]),
        labels=[label for p in parts for label in p.labels],
        top_k_classes=np.concatenate([p.top_k_classes for p in parts]),
        top_k_scores=np.concatenate([p.top_k_scores for p in parts]),
        top_k_labels=[labels for p in parts for labels in p.top_k_labels],
        probabilities=probabilities,
    )


_TOO_LARGE = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


def explain_size_error(exc: TfclassifyError) -> TfclassifyError:
    """``exc`` with a message that names the limit when gRPC refused a message for its size (RESOURCE_EXHAUSTED
    "Sent/Received message larger than max"); ``exc`` itself otherwise."""
    found = _TOO_LARGE.search(exc.details or "")
    if found is None:
        return exc
    size, limit = int(found[2]), int(found[3])
    if found[1] == "Sent":
        which = ("this client's max_message_bytes, which it will not send past: lower max_request_bytes "
                 "(tfclassify score: --max-request-bytes) below it or raise max_message_bytes")
    else:
        which = ("a gRPC message limit: the server's --max-message-bytes for a request (lower max_request_bytes, "
                 "tfclassify score: --max-request-bytes, below it), or this client's max_message_bytes for an "
                 "answer (raise it, or send fewer images per request)")
    details = f"a message of {size:,} bytes is over the {limit:,}-byte limit of {which}"
    error = TfclassifyError(exc.code, details)
    error.__cause__ = exc.__cause__ or exc
    return error


def check_retries(retries: object) -> int:
    """``retries`` if it is a whole number from 0 to ``MAX_RETRIES``; ``TfclassifyError`` otherwise."""
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise invalid(f"retries must be a whole number from 0 to {MAX_RETRIES} (gRPC sends a call at most "
                      f"{MAX_RETRIES + 1} times), got {retries!r}")
    return retries


def retry_service_config(retries: int) -> str:
    """The gRPC service config (JSON) that retries ``RETRIED_METHODS`` up to ``retries`` times.

    Backoff is exponential with full jitter, as ``tfclassify score``'s: a random wait up to 0.1 s, 0.2 s,
    0.4 s ... at most 5 s. Retry throttling keeps a client from multiplying a real overload: once about 50 more
    calls have failed than a tenth of those that succeeded, it stops retrying until answers come back.
    """
    policy = {
        "maxAttempts": retries + 1,
        "initialBackoff": f"{BACKOFF_BASE_S}s",
        "maxBackoff": f"{BACKOFF_CAP_S}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": sorted(code.name for code in RETRYABLE_CODES),
    }
    return json.dumps({
        "methodConfig": [{"name": [{"service": pb.DESCRIPTOR.services_by_name["Classifier"].full_name,
                                    "method": method} for method in RETRIED_METHODS],
                          "retryPolicy": policy}],
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    })


def channel_options(max_message_bytes: int, target: str, extra=(), retries: int = 0) -> list[tuple[str, object]]:
    """Channel options: message size limits, round-robin over every address of a multi-address target, and
    gRPC's own retries of refused calls (``retries``, 0: none)."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if target.startswith(("dns:", "ipv4:", "ipv6:")):
        # One HTTP/2 connection per resolved address, requests spread over them; a dead one is skipped.
        options.append(("grpc.lb_policy_name", "round_robin"))
    if check_retries(retries):
        options += [
            ("grpc.service_config", retry_service_config(retries)),
            # gRPC keeps a call's request to send it again only up to this size (default 256 KiB: ~330 images).
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
        ]
    return [*options, *extra]
