"""The Open Inference Protocol (KServe v2, ``inference.GRPCInferenceService``)
on the same models, queues and metrics as our own API.

Implements health, metadata and ``ModelInfer`` of the protocol, Triton's
classification extension (an output with the ``classification`` parameter
answers the top-k classes as ``"score:index:label"`` strings, computed from
that output's values as they are), and Triton's ``ModelConfig`` and
``ModelStatistics`` extensions, so ``tritonclient`` and ``perf_analyzer``
work unmodified. A model has one input (the signature's, e.g. ``images``),
accepted as UINT8 pixels, or as FP32 for float models, in
``raw_input_contents`` or typed ``contents``, and its signature's outputs.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np

from tfclassify.common.version import package_version
from tfclassify.inference import grpc_service_pb2 as pb
from tfclassify.inference import grpc_service_pb2_grpc as pb_grpc
from tfclassify.inference import model_config_pb2 as config_pb
from tfclassify.server.apis.meter import Metering, RpcFailure, RpcMeter, deadline_of, ordered_window
from tfclassify.server.apis.oip_tensors import (
    CONFIG_TYPES,
    MAX_DIMENSIONS,
    classification_raw,
    datatype_of,
    from_contents,
    from_raw,
    from_raw_bytes,
    to_raw,
)
from tfclassify.server.core.calls import Call
from tfclassify.server.core.dataplane import DataPlane, Truth
from tfclassify.server.core.errors import InvalidInputError, ModelNotFoundError, ServingError
from tfclassify.server.core.images import check_image_batch
from tfclassify.server.core.registry import ServedVersion
from tfclassify.server.core.statistics import Duration
from tfclassify.server.runtime.model_runtime import ModelRuntime

API = "open_inference"
PLATFORM = "tensorflow_savedmodel"
EXTENSIONS = ("classification", "model_configuration", "statistics")
CLASSIFICATION = "classification"
#: Requests of one ModelStreamInfer call run ahead of the responses being sent.
STREAM_WINDOW = 4


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` on a ``DataPlane``."""

    def __init__(self, dataplane: DataPlane, metering: Metering, is_ready: Callable[[], bool],
                 transport: str = "grpc") -> None:
        self._dataplane = dataplane
        self._metrics = metering.metrics
        self._is_ready = is_ready
        self._meter = RpcMeter(API, metering, transport)

    # -- health and metadata ------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext):
        return pb.ServerReadyResponse(ready=self._is_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("ModelReady", request.name, self._ready, request, context)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext):
        return pb.ServerMetadataResponse(name="tfclassify", version=package_version(), extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("ModelMetadata", request.name, self._metadata, request, context)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("ModelConfig", request.name, self._model_config, request, context)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("ModelStatistics", request.name, self._statistics, request, context)

    # -- inference ---------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("ModelInfer", request.model_name, self._infer, request, context)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        def handle(request: pb.ModelInferRequest):
            return self._meter.measured("ModelStreamInfer", request.model_name, self._infer, request, context)

        async with contextlib.aclosing(ordered_window(request_iterator, handle, STREAM_WINDOW)) as tasks:
            async for task in tasks:
                try:
                    yield pb.ModelStreamInferResponse(infer_response=await task)
                except RpcFailure as failure:  # reported in the stream, which goes on (as Triton does)
                    yield pb.ModelStreamInferResponse(error_message=failure.details)

    # -- the RPCs, run by the meter ------------------------------------------------
    async def _ready(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext, call: Call):
        try:
            call.answered_by(self._resolve(request.name, request.version))
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def _metadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext, call: Call):
        runtime = call.answered_by(self._resolve(request.name, request.version)).runtime
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=runtime.name,
            versions=[str(v) for v in self._dataplane.registry.versions(runtime.name)],
            platform=PLATFORM,
            inputs=[tensor(name=runtime.input_key, datatype=_input_datatype(runtime), shape=[-1, *runtime.input_shape])],
            outputs=[
                tensor(name=name, datatype=datatype_of(dtype), shape=[-1, *shape])
                for name, (dtype, shape) in runtime.outputs.items()
            ],
        )

    async def _model_config(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext, call: Call):
        return pb.ModelConfigResponse(config=self._config(call.answered_by(self._resolve(request.name, request.version))))

    async def _infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.ModelInferResponse:
        served = self._resolve(request.model_name, request.model_version)
        runtime = served.runtime
        requested = _requested_outputs(runtime, request)
        call.runs_on(served)  # from here on, a failure counts in the version's statistics (Triton counts them alike)
        images = self._input_images(runtime, request)
        per_image = 0
        for name, top_k in requested:
            dtype, shape = runtime.outputs[name]
            # Raw: the tensor's bytes; classification: top_k length-prefixed "score:index:label" strings.
            per_image += top_k * (4 + 12 + runtime.mean_label_bytes) if top_k else dtype.itemsize * math.prod(shape)
        self._dataplane.check_response_size(len(images), per_image)
        if images.dtype == object:  # PNG/JPEG files: decoded, or checked for a model that decodes them
            served, images = await self._dataplane.files_for(
                call, lambda: self._resolve(request.model_name, request.model_version), list(images))
            runtime = served.runtime
        outputs, _ = await self._dataplane.infer(call, images, deadline_of(context), _truth(request))
        response = pb.ModelInferResponse(model_name=runtime.name, model_version=served.version_label, id=request.id)
        for name, top_k in requested:
            array = outputs[name]
            if top_k:  # the classification extension: "score:index:label" strings, best first
                response.outputs.add(name=name, datatype="BYTES", shape=(len(array), top_k))
                response.raw_output_contents.append(
                    classification_raw(array, top_k, _suffixes(runtime, name, array.shape[1])))
            else:
                response.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=array.shape)
                response.raw_output_contents.append(to_raw(array))
        return response

    # -- helpers ---------------------------------------------------------------------
    def _resolve(self, name: str, version: str) -> ServedVersion:
        if not name:
            raise InvalidInputError("no model name given: set the model name")
        if version and not _is_version_number(version):
            raise InvalidInputError(f"model version {version!r} is not a version number")
        return self._dataplane.resolve(name, int(version) if version else None)

    def _input_images(self, runtime: ModelRuntime, request: pb.ModelInferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidInputError(
                f"expected 1 inputs but got {len(request.inputs)} inputs for model '{runtime.name}' "
                f"(send one input named '{runtime.input_key}')"
            )
        tensor = request.inputs[0]
        if tensor.name != runtime.input_key:
            raise InvalidInputError(
                f"unexpected inference input '{tensor.name}' for model '{runtime.name}'; its input is '{runtime.input_key}'"
            )
        # BYTES: PNG/JPEG files, decoded to a pixel model's size and channels, or passed to a model that takes files.
        accepted = ("BYTES",) if runtime.takes_encoded else ("UINT8", "FP32", "BYTES") if runtime.takes_float else (
            "UINT8", "BYTES")
        if tensor.datatype not in accepted:
            raise InvalidInputError(
                f"unexpected datatype {tensor.datatype or '(none)'} for inference input '{tensor.name}', "
                f"expecting {' or '.join(accepted)}"
            )
        shape = tuple(tensor.shape)
        if len(shape) > MAX_DIMENSIONS:  # an image batch has 2 to 5; messages must not format products of 300
            raise InvalidInputError(f"input '{tensor.name}' has {len(shape)} dimensions; a batch of images has at "
                                    f"most {MAX_DIMENSIONS}")
        if any(d < 0 for d in shape):
            raise InvalidInputError(f"input '{tensor.name}' has shape {list(shape)}; dimensions must not be negative")
        if tensor.datatype == "BYTES":  # files: counted before any is parsed
            if len(shape) != 1 and shape[1:] != (1,):  # [N, 1]: Triton models' files carry dims [1]
                raise InvalidInputError(f"input '{tensor.name}' has shape {list(shape)}; BYTES inputs are a batch [N] "
                                        "(or [N, 1]) of encoded images (PNG/JPEG files)")
            self._dataplane.check_batch_size(shape[0])
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
                raise InvalidInputError(
                    "raw_input_contents must hold exactly one entry per input, and inputs then carry no contents"
                )
            raw = request.raw_input_contents[0]
            array = (from_raw_bytes(raw, shape, tensor.name) if tensor.datatype == "BYTES"
                     else from_raw(raw, tensor.datatype, shape, tensor.name))
        else:
            array = from_contents(tensor.contents, tensor.datatype, shape, tensor.name)
        if tensor.datatype == "BYTES":  # files: decoded or checked by the caller, off the event loop
            return array.reshape(-1)
        return check_image_batch(array, runtime.image_shape, self._dataplane.max_images_per_request)

    def _config(self, served: ServedVersion) -> config_pb.ModelConfig:
        runtime = served.runtime
        options = served.batcher.options
        gpu = any("GPU" in d.upper() for d in served.devices)
        return config_pb.ModelConfig(
            name=runtime.name,
            platform=PLATFORM,
            backend="tensorflow",
            max_batch_size=self._dataplane.max_images_per_request,
            input=[
                config_pb.ModelInput(
                    name=runtime.input_key,
                    data_type=config_pb.DataType.Value(CONFIG_TYPES[_input_datatype(runtime)]),
                    dims=runtime.input_shape,
                )
            ],
            output=[
                config_pb.ModelOutput(
                    name=name,
                    data_type=config_pb.DataType.Value(CONFIG_TYPES[datatype_of(dtype)]),
                    dims=shape,
                    label_filename="labels.txt" if name == runtime.output_key else "",
                )
                for name, (dtype, shape) in runtime.outputs.items()
            ],
            instance_group=[
                config_pb.ModelInstanceGroup(
                    count=len(served.replicas),
                    kind=config_pb.ModelInstanceGroup.KIND_GPU if gpu else config_pb.ModelInstanceGroup.KIND_CPU,
                )
            ],
            dynamic_batching=config_pb.ModelDynamicBatching(
                preferred_batch_size=[options.max_batch_size],
                max_queue_delay_microseconds=int(options.batch_timeout_s * 1e6),
                preserve_ordering=True,
            ),
            parameters={"preprocessing": config_pb.ModelParameter(string_value=runtime.preprocessing.as_json())},
        )

    async def _statistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext, call: Call
    ) -> pb.ModelStatisticsResponse:
        registry = self._dataplane.registry
        if request.name and not registry.has(request.name):
            raise ModelNotFoundError(f"requested model '{request.name}' is not available")
        if request.version and not _is_version_number(request.version):
            raise InvalidInputError(f"model version {request.version!r} is not a version number")
        response = pb.ModelStatisticsResponse()
        for name in [request.name] if request.name else registry.names():
            versions = registry.versions(name)
            if request.version:
                if int(request.version) not in versions:
                    raise ModelNotFoundError(f"requested model '{name}' version {request.version} is not available")
                versions = [int(request.version)]
            for version in versions:
                statistics = self._metrics.statistics(name, version)
                if statistics is None:
                    continue
                entry = response.model_stats.add(
                    name=name, version=str(version), last_inference=statistics.last_inference_ms,
                    inference_count=statistics.inference_count, execution_count=statistics.execution_count,
                )
                stats = entry.inference_stats
                for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                    _copy_duration(getattr(statistics, field), getattr(stats, field))
                for size, duration in sorted(statistics.batches.items()):
                    _copy_duration(duration, entry.batch_stats.add(batch_size=size).compute_infer)
        return response


def _is_version_number(version: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²" and "①", which ``int`` refuses, and "１"), and at most 19 of
    them: a version is an int64, and ``int`` refuses strings of over 4,300 digits with an error of its own."""
    return version.isascii() and version.isdigit() and len(version) <= 19


_CLASS_INDEX = re.compile(r"-?[0-9]+", re.ASCII)


def _truth(request: pb.ModelInferRequest) -> Truth | None:
    """The request parameters ``true_classes`` (a string of comma-separated class indices, -1 for unknown, or
    an integer for one image) and ``keep_for_feedback`` (a bool: keep the predictions under the request's
    ``id`` for the tfclassify ``Feedback`` RPC)."""
    parameters = request.parameters
    if "true_classes" not in parameters and "keep_for_feedback" not in parameters:
        return None
    true = None
    if "true_classes" in parameters:
        parameter = parameters["true_classes"]
        kind = parameter.WhichOneof("parameter_choice")
        if kind == "int64_param":
            true = [parameter.int64_param]
        elif kind == "string_param":
            parts = parameter.string_param.split(",")
            # ASCII digits only (int() also takes " 3", "1_0" and other scripts' digits), and short: int() of a
            # 10,000-digit string is slow; the value is checked against the model's classes later.
            if all(_CLASS_INDEX.fullmatch(part) for part in parts) and all(len(part) <= 11 for part in parts):
                true = [int(part) for part in parts]
        if true is None:
            raise InvalidInputError("the true_classes parameter must be comma-separated class indices, one per "
                                    "image (-1 where unknown), e.g. \"3,0,-1\", or one integer for one image")
    keep = False
    if "keep_for_feedback" in parameters:
        parameter = parameters["keep_for_feedback"]
        if parameter.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidInputError("the keep_for_feedback parameter must be a bool")
        keep = parameter.bool_param
    return Truth.of(true, keep, request.id)


def _input_datatype(runtime: ModelRuntime) -> str:
    return "BYTES" if runtime.takes_encoded else "FP32" if runtime.takes_float else "UINT8"


def _requested_outputs(runtime: ModelRuntime, request: pb.ModelInferRequest) -> list[tuple[str, int]]:
    """(output name, classification top-k or 0) of each output to answer."""
    if not request.outputs:
        return [(name, 0) for name in runtime.outputs]
    requested = []
    for output in request.outputs:
        if output.name not in runtime.outputs:
            raise InvalidInputError(
                f"unexpected inference output '{output.name}' for model '{runtime.name}'; "
                f"its outputs are {', '.join(runtime.outputs)}"
            )
        top_k = 0
        if CLASSIFICATION in output.parameters:
            parameter = output.parameters[CLASSIFICATION]
            kind = parameter.WhichOneof("parameter_choice")
            top_k = getattr(parameter, kind) if kind in ("int64_param", "uint64_param") else -1
            dtype, shape = runtime.outputs[output.name]
            if len(shape) != 1 or dtype.kind not in "fiu":
                raise InvalidInputError(
                    f"output '{output.name}' has shape {[-1, *shape]}; classification needs scores [-1, classes]"
                )
            if not 1 <= top_k <= shape[0]:
                raise InvalidInputError(
                    f"the classification parameter of output '{output.name}' must be an integer from 1 to {shape[0]}"
                )
        requested.append((output.name, top_k))
    return requested


def _suffixes(runtime: ModelRuntime, name: str, classes: int) -> list[bytes]:
    """What follows the score in each classification entry: ":index:label" for the class scores, ":index"
    for another output (UTF-8: labels may be in any script, Kuzushiji-49's for one)."""
    if name == runtime.output_key and runtime.labels:
        return [f":{i}:{label}".encode() for i, label in enumerate(runtime.labels)]
    return [f":{i}".encode() for i in range(classes)]


def _copy_duration(source: Duration, target: pb.StatisticDuration) -> None:
    target.count, target.ns = source.count, source.ns
