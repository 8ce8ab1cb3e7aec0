"""The ``tfclassify.v1.Classifier`` gRPC servicer: convert, delegate to the data plane, convert back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import grpc

from tfclassify.client.tensors import TensorError, from_tensor_proto, to_tensor_proto
from tfclassify.server.dataplane import ClassifyInput, ClassifyOutput, DataPlane
from tfclassify.server.errors import InvalidInputError, ModelNotFoundError, ServingError
from tfclassify.server.manager import ModelManager, VersionStatus
from tfclassify.server.metrics import ServerMetrics
from tfclassify.server.registry import ModelRegistry, ServedVersion
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

API = "tfclassify"
#: Requests of one ClassifyStream call classified ahead of the response being sent.
STREAM_WINDOW = 4


class RpcFailure(Exception):
    """An RPC's outcome other than OK: its status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class ClassifierServicer(pb_grpc.ClassifierServicer):
    """Implements the ``Classifier`` service on a ``DataPlane``."""

    def __init__(self, dataplane: DataPlane, manager: ModelManager, metrics: ServerMetrics) -> None:
        self._dataplane = dataplane
        self._manager = manager
        self._metrics = metrics
        self._in_flight: dict[str, object] = {}

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._observed("Classify", request.model_spec, context, self._classify(request, context))

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        # Requests are read ahead and classified concurrently (up to STREAM_WINDOW waiting), so the
        # next batch is queued while one runs; responses still go out in request order.
        window: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(maxsize=STREAM_WINDOW)

        async def read_ahead() -> None:
            try:
                async for request in request_iterator:
                    work = self._measured("ClassifyStream", request.model_spec, self._classify(request, context))
                    await window.put(asyncio.ensure_future(work))
            finally:
                await window.put(None)

        reader = asyncio.create_task(read_ahead())
        try:
            while (task := await window.get()) is not None:
                try:
                    yield await task
                except RpcFailure as failure:  # in order: the answers before it have gone out
                    await context.abort(failure.code, failure.details)
        finally:
            reader.cancel()
            while not window.empty():
                if (task := window.get_nowait()) is not None:
                    if task.done() and not task.cancelled():
                        task.exception()  # the stream already ended: retrieve it so asyncio does not log it
                    task.cancel()

    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadata:
        spec = request.model_spec
        return await self._observed("GetModelMetadata", spec, context, self._metadata(spec))

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        async def list_models() -> pb.ListModelsResponse:
            registry = self._dataplane.registry
            served = [registry.resolve(name) for name in registry.names() if registry.versions(name)]
            return pb.ListModelsResponse(models=[metadata_proto(s, registry.versions(s.runtime.name)) for s in served])

        return await self._observed("ListModels", pb.ModelSpec(), context, list_models())

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelStatusResponse:
        async def model_status() -> pb.GetModelStatusResponse:
            if request.name and request.name not in self._dataplane.registry.names():
                raise ModelNotFoundError(f"model {request.name!r} not found")
            return status_proto(self._manager.statuses(request.name or None), self._dataplane.registry)

        return await self._observed("GetModelStatus", pb.ModelSpec(name=request.name), context, model_status())

    # -- conversion ----------------------------------------------------------
    async def _classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        spec = request.model_spec
        remaining = context.time_remaining()
        which = request.WhichOneof("input")
        try:
            images = from_tensor_proto(request.tensor) if which == "tensor" else None
        except TensorError as exc:
            raise InvalidInputError(str(exc)) from exc
        output = await self._dataplane.classify(
            ClassifyInput(
                model=spec.name,
                version=spec.version if spec.HasField("version") else None,
                version_label=spec.version_label if spec.HasField("version_label") else None,
                images=images,
                encoded=list(request.encoded.images) if which == "encoded" else None,
                top_k=request.top_k,
                return_probabilities=request.return_probabilities,
                deadline=None if remaining is None else time.monotonic() + remaining,
            )
        )
        return classify_response(output, request.top_k, request.request_id, request.omit_labels)

    async def _metadata(self, spec: pb.ModelSpec) -> pb.ModelMetadata:
        served = self._dataplane.resolve(
            spec.name,
            spec.version if spec.HasField("version") else None,
            spec.version_label if spec.HasField("version_label") else None,
        )
        return metadata_proto(served, self._dataplane.registry.versions(served.runtime.name))

    # -- status and metrics, in one place -------------------------------------
    async def _observed(self, method: str, spec: pb.ModelSpec, context: grpc.aio.ServicerContext, work):
        """Run ``work`` measured; a failure ends the RPC with its status."""
        try:
            return await self._measured(method, spec, work)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details)

    async def _measured(self, method: str, spec: pb.ModelSpec, work):
        """Run ``work``, counting it in the metrics; failures become ``RpcFailure`` (one mapping for every RPC)."""
        started = time.perf_counter()
        code, version = grpc.StatusCode.OK, ""
        in_flight = self._in_flight.get(method)
        if in_flight is None:
            in_flight = self._in_flight[method] = self._metrics.requests_in_flight.labels(API, method)
        in_flight.inc()
        try:
            response = await work
            if "model_spec" in response.DESCRIPTOR.fields_by_name:
                version = str(response.model_spec.version)
            return response
        except ServingError as exc:
            code = exc.code
            raise RpcFailure(code, str(exc)) from exc
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            raise RpcFailure(code, f"internal error in {method}; the server log has the details") from None
        finally:
            # Unknown model names are not used as label values: clients must not be able to grow the series count.
            model = spec.name if spec.name in self._dataplane.registry.names() else ""
            in_flight.dec()
            self._metrics.observe_request(API, method, model, version, code.name, time.perf_counter() - started)


def classify_response(
    output: ClassifyOutput, top_k: int, request_id: str = "", omit_labels: bool = False
) -> pb.ClassifyResponse:
    """A ``ClassifyResponse`` with the columns of ``output``."""
    runtime = output.runtime
    response = pb.ClassifyResponse(
        model_spec=pb.ModelSpec(name=runtime.name, version=runtime.version),
        classes=output.classes.tolist(),
        scores=output.scores.tolist(),
        top_k=top_k,
        request_id=request_id,
    )
    if top_k:
        response.top_k_classes.extend(output.top_k_classes.ravel().tolist())
        response.top_k_scores.extend(output.top_k_scores.ravel().tolist())
    if not omit_labels:
        labels = runtime.label_array
        response.labels.extend(labels[output.classes].tolist())
        if top_k:
            response.top_k_labels.extend(labels[output.top_k_classes.ravel()].tolist())
    if output.probabilities is not None:
        to_tensor_proto(output.probabilities, out=response.probabilities)
    return response


def metadata_proto(served: ServedVersion, versions: list[int]) -> pb.ModelMetadata:
    """The ``ModelMetadata`` message describing a served version."""
    runtime = served.runtime
    return pb.ModelMetadata(
        model_spec=pb.ModelSpec(name=runtime.name, version=runtime.version),
        versions=versions,
        input_shape=list(runtime.input_shape),
        input_dtype=pb.FLOAT32 if runtime.takes_float else pb.UINT8,
        input_scale=runtime.input_scale,
        labels=runtime.labels,
        output_kind=runtime.output_kind,
        signature_name=runtime.signature_name,
        training_metadata_json=json.dumps(runtime.training_metadata, sort_keys=True),
        device=",".join(served.devices),
    )


def status_proto(statuses: list[VersionStatus], registry: ModelRegistry) -> pb.GetModelStatusResponse:
    """The ``GetModelStatusResponse`` listing ``statuses``."""
    response = pb.GetModelStatusResponse()
    for s in statuses:
        labels = sorted(label for label, v in registry.labels(s.name).items() if v == s.version)
        response.versions.add(
            name=s.name, version=s.version, state=pb.ModelVersionStatus.State.Value(s.state), error=s.error,
            devices=s.devices, labels=labels, load_seconds=s.load_seconds,
        )
    return response
