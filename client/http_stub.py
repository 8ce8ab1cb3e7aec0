"""Stand-ins for the generated ``ClassifierStub`` over ``HttpTransport``, so that ``ClassifierClient`` (sync and
asyncio) runs the same code, requests, splitting and results over HTTP as over gRPC; and the server's readiness
over HTTP."""

from __future__ import annotations

import asyncio
import http.client
import time
from concurrent.futures import Future
from typing import Generic

import grpc
from google.protobuf.message import Message

from tfclassify.client.errors import TfclassifyError
from tfclassify.client.http_transport import HttpTransport, M, model_ready_path
from tfclassify.v1 import classifier_pb2 as pb

#: The Open Inference Protocol's server readiness: open without a token, as gRPC's health service.
READY_PATH = "/v2/health/ready"


class HttpMethod(Generic[M]):
    """One unary method: ``method(request, timeout=s)`` and ``method.future(request, timeout=s)``, as gRPC's."""

    def __init__(self, transport: HttpTransport, name: str, response_class: type[M]) -> None:
        self._transport, self._name, self._response_class = transport, name, response_class

    def __call__(self, request: Message, timeout: float) -> M:
        return self._transport.call(self._name, request, self._response_class, time.monotonic() + timeout)

    def future(self, request: Message, timeout: float) -> Future[M]:
        """The call on the transport's threads; its deadline runs from now, as a gRPC future's."""
        return self._transport.submit(self._transport.call, self._name, request, self._response_class,
                                      time.monotonic() + timeout)


class AsyncHttpMethod(Generic[M]):
    """One unary method for asyncio code: ``await method(request, timeout=s)`` (run on the transport's threads)."""

    def __init__(self, method: HttpMethod[M]) -> None:
        self._method = method

    async def __call__(self, request: Message, timeout: float) -> M:
        return await asyncio.wrap_future(self._method.future(request, timeout))


class HttpStub:
    """The unary methods of ``tfclassify.v1.Classifier`` over HTTP, named as the generated stub's."""

    def __init__(self, transport: HttpTransport) -> None:
        self.Classify = HttpMethod(transport, "Classify", pb.ClassifyResponse)
        self.GetModelMetadata = HttpMethod(transport, "GetModelMetadata", pb.ModelMetadata)
        self.ListModels = HttpMethod(transport, "ListModels", pb.ListModelsResponse)
        self.GetModelStatus = HttpMethod(transport, "GetModelStatus", pb.GetModelStatusResponse)
        self.Feedback = HttpMethod(transport, "Feedback", pb.FeedbackResponse)


class AsyncHttpStub:
    """``HttpStub`` for asyncio code (``grpc.aio``'s stub calls are awaited)."""

    def __init__(self, stub: HttpStub) -> None:
        self.Classify = AsyncHttpMethod(stub.Classify)
        self.GetModelMetadata = AsyncHttpMethod(stub.GetModelMetadata)
        self.ListModels = AsyncHttpMethod(stub.ListModels)
        self.GetModelStatus = AsyncHttpMethod(stub.GetModelStatus)
        self.Feedback = AsyncHttpMethod(stub.Feedback)


def is_ready(transport: HttpTransport, stub: HttpStub, service: str, timeout: float) -> bool:
    """Whether the server (or the model ``service``) is ready: ``GET /v2/health/ready`` (``/v2/models/NAME/ready``).

    A server without those routes (404) is asked ``ListModels`` (``GetModelStatus``: a version AVAILABLE) instead.
    ``TfclassifyError`` when the address answers but not as an HTTP server (a gRPC port), or refuses the token:
    no wait would change that.
    """
    deadline = time.monotonic() + timeout
    try:
        status = transport.get_status(model_ready_path(service) if service else READY_PATH, deadline)
    except TfclassifyError as exc:
        if exc.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise
        if isinstance(exc.__cause__, http.client.HTTPException) and not isinstance(exc.__cause__, ConnectionError):
            raise
        return False
    if status != 404:
        return status == 200
    try:
        if not service:
            stub.ListModels(pb.ListModelsRequest(), max(0.001, deadline - time.monotonic()))
            return True
        reply = stub.GetModelStatus(pb.GetModelStatusRequest(name=service), max(0.001, deadline - time.monotonic()))
    except TfclassifyError as exc:
        if exc.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise
        return False
    return any(v.state == pb.ModelVersionStatus.AVAILABLE for v in reply.versions)

