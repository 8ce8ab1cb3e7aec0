"""``ClassifierClient``: the synchronous gRPC client other services import."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import cast

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfclassify.client.errors import TfclassifyError
from tfclassify.client.http_stub import HttpStub, is_ready
from tfclassify.client.http_transport import HttpTransport, is_http_url
from tfclassify.client.requests import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_RETRIES,
    SPLIT_IN_FLIGHT,
    as_image_batch,
    channel_options,
    check_max_request_bytes,
    check_retries,
    check_target,
    check_true_classes,
    classify_request,
    encoded_requests,
    explain_size_error,
    feedback_request,
    invalid,
    merge_results,
    model_spec,
    pixel_slices,
)
from tfclassify.client.results import ClassifyResult, FeedbackResult, ModelInfo, RepositoryStatus, VersionStatus
from tfclassify.client.tls import TokenInterceptor
from tfclassify.client.wrong_port import answers_http1
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

#: Large enough for a batch of ~80,000 28x28 images or its probabilities.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: A call in flight: gRPC's future, or the HTTP transport's (``concurrent.futures``).
CallFuture = grpc.Future | Future


class ClassifyFuture:
    """A ``Classify`` call in flight (or the calls of a batch split by bytes); ``result()`` waits for it."""

    def __init__(self, call: CallFuture | Sequence[CallFuture], address: str | None = None) -> None:
        self._calls: list[CallFuture] = list(call) if isinstance(call, (list, tuple)) else [cast(CallFuture, call)]
        self._address = address

    def done(self) -> bool:
        return all(call.done() for call in self._calls)

    def cancel(self) -> bool:
        return all([call.cancel() for call in self._calls])  # noqa: C419 - a list: cancel every call, not up to a False

    def result(self, timeout: float | None = None) -> ClassifyResult:
        """The result; raises ``TfclassifyError`` when a call failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts = []
        try:
            for call in self._calls:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                parts.append(ClassifyResult.from_proto(call.result(timeout=left)))
        except grpc.RpcError as exc:
            for call in self._calls:
                call.cancel()
            raise explain_size_error(TfclassifyError.from_rpc_error(exc, self._address)) from exc
        except TfclassifyError:  # the HTTP transport's calls raise it themselves
            for call in self._calls:
                call.cancel()
            raise
        return merge_results(parts)


class ClassifierClient:
    """Calls a tfclassify server.

    >>> with ClassifierClient("localhost:8500") as client:
    ...     result = client.classify(images, model="fashion_mnist")
    ...     print(result[0].label, result[0].score)

    ``address`` is ``HOST:PORT`` or a gRPC target such as
    ``dns:///name:8500`` (every address it resolves to is used, round-robin),
    or the URL of the server's HTTP port, ``http://HOST:8501`` or
    ``https://HOST:8501``: the same methods, arguments, results and errors
    over HTTP/1.1 (the standard library's ``http.client``, one keep-alive
    connection per thread; ``classify_async`` and the requests of a split
    batch run on a few threads of the client's own). Over HTTP, TLS is
    ``ssl_context`` (``tfclassify.client.tls.ssl_context``: a CA file and a
    client certificate for mutual TLS; the system's trusted roots when None),
    not ``credentials``; ``max_message_bytes`` and ``options`` are gRPC's
    only; readiness is the server's ``GET /v2/health/ready``.
    ``images`` is a batch ``[N, 28, 28]`` (``[N, 28, 28, 1]`` and ``[N, 784]``
    too) of uint8 pixels, or float32 for float-input models; one image is a
    batch of one (``image[np.newaxis]``). Every call has a deadline:
    ``timeout`` seconds unless the call says otherwise. Failures, bad
    arguments included, raise ``TfclassifyError``.

    A call the server did not take (busy: RESOURCE_EXHAUSTED; not ready,
    starting, draining or unreachable: UNAVAILABLE; refused by gRPC's
    pending-call limit: CANCELLED) is sent again by gRPC (over HTTP, by the
    client, alike, except retry throttling), up to ``retries``
    times (0-4) with jittered exponential backoff, within the call's
    deadline; retries pause while most calls fail. Classify and the reads
    are retried, never ``feedback``.

    A batch larger than ``max_request_bytes`` (16 MiB: 111 images of
    224 x 224 x 3) is sent as several requests of at most that many bytes of
    images each (an image larger than that alone), ``SPLIT_IN_FLIGHT`` at a
    time, and answered as one result: gRPC's message limit (64 MiB on both
    sides by default) never sees a request it refuses. Keep it below the
    server's ``--max-message-bytes``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, object]] = (),
        retries: int = MAX_RETRIES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_request_bytes = check_max_request_bytes(max_request_bytes)
        self.address = address
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        self._http: HttpTransport | None = None
        self._stub: pb_grpc.ClassifierStub | HttpStub
        if is_http_url(address):
            self._http = http_transport(address, credentials, ssl_context, token, retries)
            self._stub = HttpStub(self._http)
            return
        if ssl_context is not None:
            raise invalid(f"ssl_context is for http(s):// addresses; gRPC ({address}) takes credentials")
        opts = channel_options(max_message_bytes, check_target(address), options, retries)
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=opts)
        if token:  # every call carries it (servers started with --auth-tokens)
            self._channel = grpc.intercept_channel(self._channel, TokenInterceptor(token))
        self._stub = pb_grpc.ClassifierStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        """Close the channel (over HTTP: the connections and threads)."""
        if self._http is not None:
            self._http.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> ClassifierClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- health --------------------------------------------------------------
    def is_server_ready(self, service: str = "", timeout: float | None = None) -> bool:
        """Whether the health service reports ``service`` (default: the server) SERVING; ``TfclassifyError``
        when the address answers HTTP/1 rather than gRPC (a metrics port, say), which no wait would change.
        Over HTTP: ``GET /v2/health/ready`` (``/v2/models/{service}/ready``)."""
        if self._http is not None:
            return is_ready(self._http, cast(HttpStub, self._stub), service, self._timeout(timeout))
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout)
            )
        except grpc.RpcError as exc:
            if answers_http1(exc.details() or ""):  # not a server that is not ready: not a gRPC server at all
                raise TfclassifyError.from_rpc_error(exc, self.address) from exc
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_for_ready(self, timeout: float = 60.0, service: str = "") -> None:
        """Block until the server is ready; ``TfclassifyError`` (UNAVAILABLE) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.is_server_ready(service, timeout=min(2.0, timeout)):
            if time.monotonic() >= deadline:
                raise TfclassifyError(
                    grpc.StatusCode.UNAVAILABLE, f"server at {self.address} not ready after {timeout:g} s"
                )
            time.sleep(0.1)

    # -- classification ------------------------------------------------------
    def classify(
        self,
        images: np.ndarray,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        top_k: int = 0,
        return_probabilities: bool = False,
        timeout: float | None = None,
        true_classes: Sequence[int] | np.ndarray | None = None,
        keep_for_feedback: bool = False,
        request_id: str = "",
        omit_labels: bool = False,
    ) -> ClassifyResult:
        """Classify a batch of images with ``model`` (``omit_labels``: no label strings in the result, for
        callers that only read class indices).

        ``true_classes`` (one class index per image, -1 where unknown), when the caller knows them, are
        counted by the server in its live-accuracy metrics; they never change the answer.
        ``keep_for_feedback`` keeps the predictions on the server under ``request_id`` until ``feedback``
        brings the true classes (a batch over ``max_request_bytes`` cannot be kept: it takes several requests).
        """
        requests = self._split_requests(images, model, version, version_label, top_k, return_probabilities,
                                        omit_labels, true_classes, keep_for_feedback, request_id)
        parts: list[ClassifyResult] = []
        window: list[ClassifyFuture] = []
        try:
            for request in requests:  # at most SPLIT_IN_FLIGHT requests built and in flight at once
                window.append(ClassifyFuture(self._stub.Classify.future(request, timeout=self._timeout(timeout)),
                                             self.address))
                if len(window) == SPLIT_IN_FLIGHT:
                    parts.append(window.pop(0).result())
            while window:
                parts.append(window.pop(0).result())
        finally:  # one part failed: the others' answers would be thrown away, so stop them
            for future in window:
                future.cancel()
        return merge_results(parts)

    def classify_async(
        self,
        images: np.ndarray,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        top_k: int = 0,
        return_probabilities: bool = False,
        timeout: float | None = None,
        omit_labels: bool = False,
        true_classes: Sequence[int] | np.ndarray | None = None,
        keep_for_feedback: bool = False,
        request_id: str = "",
    ) -> ClassifyFuture:
        """Start a ``classify`` call and return at once; for pipelining many batches.

        ``omit_labels`` leaves label strings out of the result (``labels`` and
        ``top_k_labels`` come back empty): less work for large batches. A batch over ``max_request_bytes`` starts
        all its requests at once.
        """
        requests = self._split_requests(images, model, version, version_label, top_k, return_probabilities,
                                        omit_labels, true_classes, keep_for_feedback, request_id)
        return ClassifyFuture([self._stub.Classify.future(r, timeout=self._timeout(timeout)) for r in requests],
                              self.address)

    def classify_encoded(
        self,
        images: Sequence[bytes],
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        top_k: int = 0,
        return_probabilities: bool = False,
        timeout: float | None = None,
        true_classes: Sequence[int] | np.ndarray | None = None,
    ) -> ClassifyResult:
        """Classify encoded PNG/JPEG files (one ``bytes`` per image), in requests of at most ``max_request_bytes``
        (``true_classes``: as for ``classify``)."""
        parts = []
        for request in encoded_requests(images, model, version, version_label, top_k, return_probabilities,
                                        true_classes, self.max_request_bytes):
            parts.append(ClassifyFuture(self._stub.Classify.future(request, timeout=self._timeout(timeout)),
                                        self.address).result())
        return merge_results(parts)

    # -- models --------------------------------------------------------------
    def get_model_metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> ModelInfo:
        """Describe ``model`` (its latest version unless ``version`` or ``version_label`` says which)."""
        request = pb.GetModelMetadataRequest(model_spec=model_spec(model, version, version_label))
        return ModelInfo.from_proto(self._call(self._stub.GetModelMetadata, request, timeout))

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the server serves, each at its latest version."""
        reply = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in reply.models]

    def get_model_status(self, model: str = "", *, timeout: float | None = None) -> list[VersionStatus]:
        """The state of every version of ``model`` (of every model when empty)."""
        reply = self._call(self._stub.GetModelStatus, pb.GetModelStatusRequest(name=model), timeout)
        return [VersionStatus.from_proto(v) for v in reply.versions]

    def get_repository_status(self, *, timeout: float | None = None) -> RepositoryStatus:
        """Every version's state, and the repository folders the server does not serve."""
        reply = self._call(self._stub.GetModelStatus, pb.GetModelStatusRequest(), timeout)
        return RepositoryStatus.from_proto(reply)

    # -- live accuracy ---------------------------------------------------------
    def feedback(self, model: str, request_id: str, true_classes: Sequence[int] | np.ndarray, *,
                 timeout: float | None = None) -> FeedbackResult:
        """The true classes of a request classified earlier with ``keep_for_feedback`` (-1 where still unknown);
        the server counts them in the live-accuracy metrics of the version that classified it, once."""
        request = feedback_request(model, request_id, true_classes)
        return FeedbackResult.from_proto(self._call(self._stub.Feedback, request, timeout))

    # -- helpers -------------------------------------------------------------
    def _split_requests(self, images, model, version, version_label, top_k, return_probabilities, omit_labels,
                        true_classes, keep_for_feedback, request_id) -> Iterator[pb.ClassifyRequest]:
        return split_requests(self.max_request_bytes, images, model, version, version_label, top_k,
                              return_probabilities, omit_labels, true_classes, keep_for_feedback, request_id)

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self._timeout(timeout))
        except grpc.RpcError as exc:
            raise TfclassifyError.from_rpc_error(exc, self.address) from exc


def split_requests(max_request_bytes: int, images, model, version, version_label, top_k, return_probabilities,
                   omit_labels, true_classes, keep_for_feedback, request_id) -> Iterator[pb.ClassifyRequest]:
    """The checked requests of a batch of pixels, at most ``max_request_bytes`` of images each: the first is
    built (and every argument checked) before this returns, the others as they are taken."""
    batch = as_image_batch(images)
    parts = pixel_slices(batch, max_request_bytes)
    if len(parts) > 1 and keep_for_feedback:
        raise TfclassifyError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"keep_for_feedback: {len(batch):,} images of {batch[:1].nbytes:,} bytes are over "
                              f"max_request_bytes ({max_request_bytes:,}) and would take {len(parts)} requests, "
                              "each its own request_id; send at most "
                              f"{parts[0].stop:,} images per call with keep_for_feedback")
    truth = None
    if true_classes is not None:
        truth = np.asarray(check_true_classes(true_classes, len(batch)), dtype=np.int64)
    first = classify_request(batch[parts[0]], model, version, version_label, top_k, return_probabilities,
                             omit_labels, None if truth is None else truth[parts[0]], keep_for_feedback, request_id)

    def requests() -> Iterator[pb.ClassifyRequest]:
        yield first
        for part in parts[1:]:
            yield classify_request(batch[part], model, version, version_label, top_k, return_probabilities,
                                   omit_labels, None if truth is None else truth[part], keep_for_feedback, request_id)

    return requests()


def http_transport(address: str, credentials: object, ssl_context: ssl.SSLContext | None, token: str | None,
                   retries: int) -> HttpTransport:
    """The transport of an ``http(s)://`` address, refusing gRPC's credentials (they cannot be read back as files)."""
    if credentials is not None:
        raise invalid(f"{address} is an HTTP address: give TLS as ssl_context (tfclassify.client.tls.ssl_context), "
                      "not gRPC credentials")
    return HttpTransport(address, ssl_context=ssl_context, token=token, retries=check_retries(retries))
