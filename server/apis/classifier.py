"""The ``tfclassify.v1.Classifier`` gRPC servicer: convert, delegate to the data plane, convert back."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np

from tfclassify.common.tensors import TensorError, from_tensor_proto, to_tensor_proto
from tfclassify.server.apis.meter import Metering, RpcFailure, RpcMeter, deadline_of, ordered_window
from tfclassify.server.core.calls import Call
from tfclassify.server.core.dataplane import ClassifyInput, ClassifyOutput, DataPlane, Truth
from tfclassify.server.core.errors import InvalidInputError, ModelNotFoundError
from tfclassify.server.core.manager import ModelManager, VersionStatus
from tfclassify.server.core.registry import ModelRegistry, ServedVersion
from tfclassify.server.runtime.repository import IgnoredFolder
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

API = "tfclassify"
#: Requests of one ClassifyStream call classified ahead of the response being sent.
STREAM_WINDOW = 4


class ClassifierServicer(pb_grpc.ClassifierServicer):
    """Implements the ``Classifier`` service on a ``DataPlane``."""

    def __init__(self, dataplane: DataPlane, manager: ModelManager, metering: Metering, transport: str = "grpc") -> None:
        self._dataplane = dataplane
        self._manager = manager
        self._meter = RpcMeter(API, metering, transport)

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._meter.observed("Classify", request.model_spec.name, self._classify, request, context)

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        # Requests are read ahead and classified concurrently, so the next batch is
        # queued while one runs; responses still go out in request order.
        def handle(request: pb.ClassifyRequest):
            return self._meter.measured("ClassifyStream", request.model_spec.name, self._classify, request, context)

        async with contextlib.aclosing(ordered_window(request_iterator, handle, STREAM_WINDOW)) as tasks:
            async for task in tasks:
                try:
                    yield await task
                except RpcFailure as failure:  # in order: the answers before it have gone out
                    await context.abort(failure.code, failure.details)

    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadata:
        return await self._meter.observed("GetModelMetadata", request.model_spec.name, self._metadata, request, context)

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        return await self._meter.observed("ListModels", "", self._list_models, request, context)

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelStatusResponse:
        return await self._meter.observed("GetModelStatus", request.name, self._model_status, request, context)

    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        return await self._meter.observed("Feedback", request.model_name, self._feedback, request, context)

    # -- the RPCs, run by the meter --------------------------------------------
    async def _classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.ClassifyResponse:
        spec = request.model_spec
        which = request.WhichOneof("input")
        try:
            images = from_tensor_proto(request.tensor) if which == "tensor" else None
        except TensorError as exc:
            raise InvalidInputError(str(exc)) from exc
        output = await self._dataplane.classify(
            call,
            ClassifyInput(
                model=spec.name,
                version=spec.version if spec.HasField("version") else None,
                version_label=spec.version_label if spec.HasField("version_label") else None,
                images=images,
                encoded=list(request.encoded.images) if which == "encoded" else None,
                top_k=request.top_k,
                return_probabilities=request.return_probabilities,
                omit_labels=request.omit_labels,
                deadline=deadline_of(context),
                truth=Truth.of(request.true_classes, request.keep_for_feedback, request.request_id),
            ),
        )
        return classify_response(output, request.top_k, request.request_id, request.omit_labels)

    async def _feedback(
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.FeedbackResponse:
        true = np.asarray(request.true_classes, dtype=np.int64)
        version, labelled, correct = self._dataplane.feedback.judge(request.model_name, request.request_id, true)
        return pb.FeedbackResponse(model_spec=pb.ModelSpec(name=request.model_name, version=version),
                                   labelled=labelled, correct=correct)

    async def _metadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.ModelMetadata:
        spec = request.model_spec
        served = call.answered_by(self._dataplane.resolve(
            spec.name,
            spec.version if spec.HasField("version") else None,
            spec.version_label if spec.HasField("version_label") else None,
        ))
        return metadata_proto(served, self._dataplane.registry.versions(served.runtime.name))

    async def _list_models(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.ListModelsResponse:
        registry = self._dataplane.registry
        served = [registry.resolve(name) for name in registry.names() if registry.versions(name)]
        return pb.ListModelsResponse(models=[metadata_proto(s, registry.versions(s.runtime.name)) for s in served])

    async def _model_status(
        self, request: pb.GetModelStatusRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.GetModelStatusResponse:
        if request.name and not self._dataplane.registry.has(request.name):
            raise ModelNotFoundError(f"model {request.name!r} not found")
        ignored = [] if request.name else self._manager.ignored
        return status_proto(self._manager.statuses(request.name or None), self._dataplane.registry, ignored)


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
        input_dtype=pb.STRING if runtime.takes_encoded else pb.FLOAT32 if runtime.takes_float else pb.UINT8,
        input_scale=runtime.input_scale,
        labels=runtime.labels,
        output_kind=runtime.output_kind,
        signature_name=runtime.signature_name,
        training_metadata_json=json.dumps(runtime.training_metadata, sort_keys=True),
        device=",".join(served.devices),
        runtime=runtime.runtime_kind,
        channels=runtime.channels,
        preprocessing=pb.Preprocessing(
            scale=runtime.input_scale, offset=runtime.preprocessing.offset, mean=runtime.preprocessing.mean,
            std=runtime.preprocessing.std, channel_order=runtime.preprocessing.channel_order,
            resize=runtime.preprocessing.resize, crop_fraction=runtime.preprocessing.crop_fraction,
            interpolation=runtime.preprocessing.interpolation),
    )


def status_proto(
    statuses: list[VersionStatus], registry: ModelRegistry, ignored: Sequence[IgnoredFolder] = ()
) -> pb.GetModelStatusResponse:
    """The ``GetModelStatusResponse`` listing ``statuses`` and the repository's ``ignored`` folders."""
    response = pb.GetModelStatusResponse(
        ignored_folders=[pb.IgnoredFolder(name=f.name, reason=f.reason) for f in ignored]
    )
    for s in statuses:
        labels = sorted(label for label, v in registry.labels(s.name).items() if v == s.version)
        response.versions.add(
            name=s.name, version=s.version, state=pb.ModelVersionStatus.State.Value(s.state), error=s.error,
            devices=s.devices, labels=labels, load_seconds=s.load_seconds,
        )
    return response
