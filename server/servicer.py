"""The ``tfclassify.v1.Classifier`` gRPC servicer: convert, delegate to the data plane, convert back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from tfclassify.client.tensors import TensorError, from_tensor_proto, to_tensor_proto
from tfclassify.server.dataplane import ClassifyInput, ClassifyOutput, DataPlane
from tfclassify.server.errors import InvalidInputError, ServingError
from tfclassify.server.metrics import ServerMetrics
from tfclassify.server.runtime import ModelRuntime
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

API = "tfclassify"


class ClassifierServicer(pb_grpc.ClassifierServicer):
    """Implements the ``Classifier`` service on a ``DataPlane``."""

    def __init__(self, dataplane: DataPlane, metrics: ServerMetrics) -> None:
        self._dataplane = dataplane
        self._metrics = metrics

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._observed("Classify", request.model_spec, context, self._classify(request))

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        async for request in request_iterator:
            yield await self._observed("ClassifyStream", request.model_spec, context, self._classify(request))

    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadata:
        spec = request.model_spec
        return await self._observed("GetModelMetadata", spec, context, self._metadata(spec))

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        async def list_models() -> pb.ListModelsResponse:
            registry = self._dataplane.registry
            runtimes = [registry.resolve(name) for name in registry.names() if registry.versions(name)]
            return pb.ListModelsResponse(models=[metadata_proto(r, registry.versions(r.name)) for r in runtimes])

        return await self._observed("ListModels", pb.ModelSpec(), context, list_models())

    # -- conversion ----------------------------------------------------------
    async def _classify(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        spec = request.model_spec
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
            )
        )
        return classify_response(output, request.top_k, request.request_id)

    async def _metadata(self, spec: pb.ModelSpec) -> pb.ModelMetadata:
        runtime = self._dataplane.resolve(
            spec.name,
            spec.version if spec.HasField("version") else None,
            spec.version_label if spec.HasField("version_label") else None,
        )
        return metadata_proto(runtime, self._dataplane.registry.versions(runtime.name))

    # -- status and metrics, in one place -------------------------------------
    async def _observed(self, method: str, spec: pb.ModelSpec, context: grpc.aio.ServicerContext, work):
        started = time.perf_counter()
        code, version = grpc.StatusCode.OK, ""
        try:
            response = await work
            if "model_spec" in response.DESCRIPTOR.fields_by_name:
                version = str(response.model_spec.version)
            return response
        except ServingError as exc:
            code = exc.code
            await context.abort(code, str(exc))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            await context.abort(code, f"internal error in {method}; the server log has the details")
        finally:
            self._metrics.requests.labels(API, method, spec.name, version, code.name).inc()
            self._metrics.request_duration.labels(API, method, spec.name).observe(time.perf_counter() - started)


def classify_response(output: ClassifyOutput, top_k: int, request_id: str = "") -> pb.ClassifyResponse:
    """A ``ClassifyResponse`` with the columns of ``output``."""
    runtime = output.runtime
    labels = np.asarray(runtime.labels, dtype=object)
    response = pb.ClassifyResponse(
        model_spec=pb.ModelSpec(name=runtime.name, version=runtime.version),
        classes=output.classes.tolist(),
        scores=output.scores.tolist(),
        labels=labels[output.classes].tolist(),
        top_k=top_k,
        top_k_classes=output.top_k_classes.ravel().tolist(),
        top_k_scores=output.top_k_scores.ravel().tolist(),
        top_k_labels=labels[output.top_k_classes.ravel()].tolist(),
        request_id=request_id,
    )
    if output.probabilities is not None:
        to_tensor_proto(output.probabilities, out=response.probabilities)
    return response


def metadata_proto(runtime: ModelRuntime, versions: list[int]) -> pb.ModelMetadata:
    """The ``ModelMetadata`` message describing ``runtime``."""
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
        device=runtime.device,
    )
