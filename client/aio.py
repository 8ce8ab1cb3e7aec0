"""The asyncio flavour of the client: ``tfclassify.client.aio.ClassifierClient``.

It mirrors the synchronous ``tfclassify.client.ClassifierClient`` method for
method, with ``async`` calls on a ``grpc.aio`` channel, for services written
on asyncio (as ``tritonclient.grpc.aio`` mirrors ``tritonclient.grpc``):

>>> async with ClassifierClient("localhost:8500") as client:
...     result = await client.classify(images, model="fashion_mnist", top_k=3)

Create it inside the running event loop that will use it. An ``http://`` or
``https://`` address (the server's HTTP port) works as for the synchronous
client: its calls run on the client's threads, awaited here.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfclassify.client.client import DEFAULT_MAX_MESSAGE_BYTES, http_transport, split_requests
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.http_stub import AsyncHttpStub, HttpStub, is_ready
from tfclassify.client.http_transport import HttpTransport, is_http_url
from tfclassify.client.requests import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_RETRIES,
    SPLIT_IN_FLIGHT,
    channel_options,
    check_max_request_bytes,
    check_target,
    encoded_requests,
    explain_size_error,
    feedback_request,
    invalid,
    merge_results,
    model_spec,
)
from tfclassify.client.results import ClassifyResult, FeedbackResult, ModelInfo, RepositoryStatus, VersionStatus
from tfclassify.client.tls import aio_token_interceptors
from tfclassify.client.wrong_port import answers_http1, explain
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

__all__ = ["ClassifierClient"]


class ClassifierClient:
    """Calls a tfclassify server from asyncio code; see ``tfclassify.client.ClassifierClient``."""

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
        self._channel: grpc.aio.Channel | None = None
        self._http: HttpTransport | None = None
        self._stub: pb_grpc.ClassifierStub | AsyncHttpStub
        if is_http_url(address):
            self._http = http_transport(address, credentials, ssl_context, token, retries)
            self._http_stub = HttpStub(self._http)
            self._stub = AsyncHttpStub(self._http_stub)
            return
        if ssl_context is not None:
            raise invalid(f"ssl_context is for http(s):// addresses; gRPC ({address}) takes credentials")
        opts = channel_options(max_message_bytes, check_target(address), options, retries)
        interceptors = aio_token_interceptors(token) if token else None
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=opts, interceptors=interceptors)
        self._stub = pb_grpc.ClassifierStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- lifecycle ---------------------------------------------------------
    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled; over HTTP, calls not started)."""
        if self._http is not None:
            await asyncio.to_thread(self._http.close)
        if self._channel is not None:
            await self._channel.close(None)  # grace None, grpc's default, which grpc-stubs require spelled out

    async def __aenter__(self) -> ClassifierClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- health --------------------------------------------------------------
    async def is_server_ready(self, service: str = "", timeout: float | None = None) -> bool:
        """Whether the health service reports ``service`` (default: the server) SERVING; ``TfclassifyError``
        when the address answers HTTP/1 rather than gRPC (a metrics port, say), which no wait would change.
        Over HTTP: ``GET /v2/health/ready`` (``/v2/models/{service}/ready``)."""
        if self._http is not None:
            return await asyncio.to_thread(is_ready, self._http, self._http_stub, service, self._timeout(timeout))
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout)
            )
        except grpc.RpcError as exc:
            if answers_http1(exc.details() or ""):  # not a server that is not ready: not a gRPC server at all
                raise await self._error(exc) from exc
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def wait_for_ready(self, timeout: float = 60.0, service: str = "") -> None:
        """Wait until the server is ready; ``TfclassifyError`` (UNAVAILABLE) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not await self.is_server_ready(service, timeout=min(2.0, timeout)):
            if time.monotonic() >= deadline:
                raise TfclassifyError(
                    grpc.StatusCode.UNAVAILABLE, f"server at {self.address} not ready after {timeout:g} s"
                )
            await asyncio.sleep(0.1)

    # -- classification ------------------------------------------------------
    async def classify(
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
    ) -> ClassifyResult:
        """Classify a batch of images with ``model`` (``omit_labels``: no label strings in the result;
        ``true_classes``, ``keep_for_feedback``: as in the synchronous client). A batch over ``max_request_bytes``
        goes as several requests, ``SPLIT_IN_FLIGHT`` at a time, answered as one result."""
        requests = split_requests(self.max_request_bytes, images, model, version, version_label, top_k,
                                  return_probabilities, omit_labels, true_classes, keep_for_feedback, request_id)
        return await self._classify_all(requests, timeout)

    async def classify_encoded(
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
        requests = encoded_requests(images, model, version, version_label, top_k, return_probabilities, true_classes,
                                    self.max_request_bytes)
        return await self._classify_all(requests, timeout)

    async def feedback(self, model: str, request_id: str, true_classes: Sequence[int] | np.ndarray, *,
                       timeout: float | None = None) -> FeedbackResult:
        """As ``ClassifierClient.feedback``."""
        request = feedback_request(model, request_id, true_classes)
        return FeedbackResult.from_proto(await self._call(self._stub.Feedback, request, timeout))

    # -- models --------------------------------------------------------------
    async def get_model_metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> ModelInfo:
        """Describe ``model`` (its latest version unless ``version`` or ``version_label`` says which)."""
        request = pb.GetModelMetadataRequest(model_spec=model_spec(model, version, version_label))
        return ModelInfo.from_proto(await self._call(self._stub.GetModelMetadata, request, timeout))

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the server serves, each at its latest version."""
        reply = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in reply.models]

    async def get_model_status(self, model: str = "", *, timeout: float | None = None) -> list[VersionStatus]:
        """The state of every version of ``model`` (of every model when empty)."""
        reply = await self._call(self._stub.GetModelStatus, pb.GetModelStatusRequest(name=model), timeout)
        return [VersionStatus.from_proto(v) for v in reply.versions]

    async def get_repository_status(self, *, timeout: float | None = None) -> RepositoryStatus:
        """Every version's state, and the repository folders the server does not serve."""
        reply = await self._call(self._stub.GetModelStatus, pb.GetModelStatusRequest(), timeout)
        return RepositoryStatus.from_proto(reply)

    # -- helpers -------------------------------------------------------------
    async def _classify_all(self, requests: Iterable[pb.ClassifyRequest], timeout: float | None) -> ClassifyResult:
        """The answers of ``requests`` (one batch, split by bytes) as one result; ``SPLIT_IN_FLIGHT`` at a time,
        each request built only when a slot is free."""
        slots = asyncio.Semaphore(SPLIT_IN_FLIGHT)

        async def one(request: pb.ClassifyRequest) -> ClassifyResult:
            try:
                return ClassifyResult.from_proto(await self._call(self._stub.Classify, request, timeout))
            finally:
                slots.release()

        tasks = []
        try:
            for request in requests:
                await slots.acquire()
                tasks.append(asyncio.ensure_future(one(request)))
            return merge_results(await asyncio.gather(*tasks))
        except TfclassifyError as exc:
            raise explain_size_error(exc) from exc.__cause__
        finally:
            for task in tasks:
                task.cancel()

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def _call(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=self._timeout(timeout))
        except grpc.RpcError as exc:
            raise await self._error(exc) from exc

    async def _error(self, error: grpc.RpcError) -> TfclassifyError:
        """``TfclassifyError.from_rpc_error``, asking an HTTP/1 server for the gRPC port off the event loop."""
        details = error.details() or ""
        if error.code() == grpc.StatusCode.UNAVAILABLE and answers_http1(details):
            return TfclassifyError.wrapping(error, error.code(), await asyncio.to_thread(explain, self.address))
        return TfclassifyError.from_rpc_error(error)
