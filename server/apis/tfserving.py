"""TensorFlow Serving's gRPC API (``tensorflow.serving.PredictionService`` and
``ModelService``) on the same models, queues and metrics as our own API.

Messages come from the ``tensorflow-serving-api`` package, so existing
clients work unmodified. Status codes follow TensorFlow Serving: an unknown
model or version is NOT_FOUND, an unknown version label or a malformed
input INVALID_ARGUMENT, an unknown signature FAILED_PRECONDITION. One
difference: a model whose versions are all still loading answers
UNAVAILABLE (retry) where TensorFlow Serving says NOT_FOUND.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfclassify.server.apis.meter import Metering, RpcMeter, deadline_of
from tfclassify.server.apis.tf_examples import images_from_examples
from tfclassify.server.core.calls import Call
from tfclassify.server.core.dataplane import DataPlane
from tfclassify.server.core.errors import (
    InvalidInputError,
    ModelNotFoundError,
    SignatureNotFoundError,
    VersionLabelNotFoundError,
)
from tfclassify.server.core.images import check_image_batch, files_array
from tfclassify.server.core.manager import ModelManager
from tfclassify.server.core.registry import ServedVersion
from tfclassify.server.runtime.model_runtime import DEFAULT_SIGNATURE, ModelRuntime

API = "tensorflow_serving"
SIGNATURE_DEF_FIELD = "signature_def"
#: Our own metadata field: the model's declared preprocessing as JSON, in a google.protobuf.StringValue.
PREPROCESSING_FIELD = "preprocessing"
#: Our version states as TensorFlow Serving's ``ModelVersionStatus.State`` (a failed load ends, with its error).
_STATES = {
    "LOADING": get_model_status_pb2.ModelVersionStatus.LOADING,
    "AVAILABLE": get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    "UNLOADING": get_model_status_pb2.ModelVersionStatus.UNLOADING,
    "FAILED": get_model_status_pb2.ModelVersionStatus.END,
}
_ERROR_UNKNOWN = 2  # tensorflow.error.Code.UNKNOWN, for a failed load


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict``, ``Classify`` and ``GetModelMetadata``; ``Regress`` and
    ``MultiInference`` stay UNIMPLEMENTED (these models are classifiers)."""

    def __init__(self, dataplane: DataPlane, metering: Metering, transport: str = "grpc") -> None:
        self._dataplane = dataplane
        self._meter = RpcMeter(API, metering, transport)

    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("Predict", request.model_spec.name, self._predict, request, context)

    async def Classify(self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext):
        return await self._meter.observed("Classify", request.model_spec.name, self._classify, request, context)

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ):
        return await self._meter.observed("GetModelMetadata", request.model_spec.name, self._metadata, request, context)

    # -- the RPCs, run by the meter -----------------------------------------------
    async def _predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext, call: Call):
        served = self._resolve(request.model_spec)
        runtime = served.runtime
        _check_signature(runtime, request.model_spec.signature_name)
        _check_input_names(runtime, list(request.inputs))
        output_names = _output_names(runtime, list(request.output_filter))
        call.runs_on(served)
        images = self._input_images(runtime, request.inputs[runtime.input_key])
        self._dataplane.check_response_size(len(images), sum(
            runtime.outputs[name][0].itemsize * math.prod(runtime.outputs[name][1]) for name in output_names))
        if images.dtype == object:  # PNG/JPEG files: decoded, or checked for a model that decodes them
            served, images = await self._dataplane.files_for(call, lambda: self._resolve(request.model_spec),
                                                             list(images))
            runtime = served.runtime
        outputs, _ = await self._dataplane.infer(call, images, deadline_of(context))
        response = predict_pb2.PredictResponse(model_spec=_spec(runtime))
        for name in output_names:
            _pack(outputs[name], response.outputs[name])
        return response

    async def _classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext, call: Call
    ):
        served = self._resolve(request.model_spec)
        runtime = served.runtime
        _check_signature(runtime, request.model_spec.signature_name)
        call.runs_on(served)
        which = request.input.WhichOneof("kind")
        if which == "example_list_with_context":
            examples, example_context = request.input.example_list_with_context.examples, (
                request.input.example_list_with_context.context
            )
        else:
            examples, example_context = request.input.example_list.examples, None

        if not examples:
            raise InvalidInputError("Input is empty: send tf.Example protos in input.example_list")
        self._dataplane.check_batch_size(len(examples))
        # Each image's answer: one Class (label and score) per class.
        self._dataplane.check_response_size(len(examples), 4 + runtime.num_classes * (runtime.mean_label_bytes + 12))
        images = await self._dataplane.decode(images_from_examples, examples, example_context, runtime.file_spec)
        # Decoding let the event loop run: take the version serving now (the one before may be unloading).
        served = call.runs_on(self._resolve(request.model_spec))
        runtime = served.runtime
        images = check_image_batch(images, runtime.image_shape, self._dataplane.max_images_per_request)
        outputs, _ = await self._dataplane.infer(call, images, deadline_of(context))
        response = classification_pb2.ClassificationResponse(model_spec=_spec(runtime))
        labels = runtime.labels
        for row in runtime.probabilities(outputs).tolist():
            response.result.classifications.add().classes.extend(
                classification_pb2.Class(label=label, score=score) for label, score in zip(labels, row)
            )
        return response

    async def _metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext, call: Call
    ):
        if not request.metadata_field:
            raise InvalidInputError("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field not in (SIGNATURE_DEF_FIELD, PREPROCESSING_FIELD):
                raise InvalidInputError(f"Metadata field {field} is not supported (supported: {SIGNATURE_DEF_FIELD}, "
                                        f"{PREPROCESSING_FIELD})")
        runtime = call.answered_by(self._resolve(request.model_spec)).runtime
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=model_pb2.ModelSpec(name=runtime.name, version={"value": runtime.version})
        )
        if SIGNATURE_DEF_FIELD in request.metadata_field:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            signatures.signature_def[runtime.signature_name].CopyFrom(
                meta_graph_pb2.SignatureDef.FromString(runtime.signature_def))
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        if PREPROCESSING_FIELD in request.metadata_field:
            response.metadata[PREPROCESSING_FIELD].Pack(wrappers_pb2.StringValue(value=runtime.preprocessing.as_json()))
        return response

    # -- helpers ------------------------------------------------------------------
    def _resolve(self, spec: model_pb2.ModelSpec) -> ServedVersion:
        if not spec.name:
            raise InvalidInputError("Missing ModelSpec name: set model_spec.name")
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
        return self._dataplane.resolve(spec.name, version, label)

    def _input_images(self, runtime: ModelRuntime, proto) -> np.ndarray:
        """The images of a Predict input: pixels checked against the signature, or PNG/JPEG files (``DT_STRING``
        [N]) as an object array: untouched for a model that takes files, to decode for a pixel model."""
        expected = runtime.input_dtype
        if proto.dtype == tf.string.as_datatype_enum:  # files, for either kind of model: checked by the caller
            shape = [d.size for d in proto.tensor_shape.dim]
            if len(shape) != 1 or shape[0] < 0 or len(proto.string_val) != shape[0]:
                raise InvalidInputError(f"input {runtime.input_key!r}: a string tensor is a batch [N] of PNG/JPEG "
                                        f"files, one value each; got shape {shape} with {len(proto.string_val)} values")
            self._dataplane.check_batch_size(shape[0])
            return files_array(proto.string_val)
        if proto.dtype != expected.as_datatype_enum:
            raise InvalidInputError(
                f"input {runtime.input_key!r} must be {expected.name} (the signature's dtype); got {_dtype_name(proto.dtype)}"
            )
        # The shape is checked before anything is allocated: make_ndarray would broadcast one value to it.
        shape = [d.size for d in proto.tensor_shape.dim]
        if not shape or tuple(shape[1:]) != runtime.input_shape or shape[0] < 0:
            raise InvalidInputError(
                f"input {runtime.input_key!r} has shape {shape}; the signature takes "
                f"{[-1, *runtime.input_shape]} (a batch of images)"
            )
        self._dataplane.check_batch_size(shape[0])
        content = proto.tensor_content  # each access of a bytes field copies it: once only
        if content:  # what clients send (make_tensor_proto packs arrays so): read in place, 4x cheaper
            dtype = np.dtype(expected.as_numpy_dtype)
            if len(content) != math.prod(shape) * dtype.itemsize:
                raise InvalidInputError(
                    f"tensor parsing error: {runtime.input_key}: tensor_content is {len(content)} bytes but shape "
                    f"{shape} of {expected.name} needs {math.prod(shape) * dtype.itemsize}"
                )
            array = np.frombuffer(content, dtype).reshape(shape)
        else:
            try:
                array = tf.make_ndarray(proto)  # typed value fields (int_val, float_val, ...)
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: a uint8 int_val outside 0-255
                raise InvalidInputError(f"tensor parsing error: {runtime.input_key}: {exc}") from None
        if array.dtype != np.uint8:
            array = array.astype(np.float32, copy=False)
        return array.reshape(len(array), *runtime.image_shape)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``GetModelStatus``; ``HandleReloadConfigRequest`` stays UNIMPLEMENTED
    (edit the config file instead: the server reloads it)."""

    def __init__(self, dataplane: DataPlane, manager: ModelManager, metering: Metering, transport: str = "grpc") -> None:
        self._dataplane = dataplane
        self._manager = manager
        self._meter = RpcMeter(API, metering, transport)

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ):
        return await self._meter.observed("GetModelStatus", request.model_spec.name, self._status, request, context)

    async def _status(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext, call: Call
    ):
        spec = request.model_spec
        statuses = self._manager.statuses(spec.name) if spec.name else []
        if not statuses:
            raise ModelNotFoundError(f"Could not find any versions of model {spec.name}")
        wanted = None
        if spec.HasField("version"):
            wanted = spec.version.value
        elif spec.WhichOneof("version_choice") == "version_label":
            labels = self._dataplane.registry.labels(spec.name)
            if spec.version_label not in labels:
                raise VersionLabelNotFoundError(f"Unrecognized servable version label: {spec.version_label}")
            wanted = labels[spec.version_label]
        if wanted is not None:
            statuses = [s for s in statuses if s.version == wanted]
            if not statuses:
                raise ModelNotFoundError(f"Could not find version {wanted} of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            entry = response.model_version_status.add(version=s.version, state=_STATES[s.state])
            if s.error:
                entry.status.error_code = _ERROR_UNKNOWN
                entry.status.error_message = s.error
        return response


def _pack(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """``array`` into ``proto`` as ``tf.make_tensor_proto`` packs it (dtype, shape, ``tensor_content``), without its
    per-call Python cost (23 us against 6 us for one image's scores, on the event loop); strings go through it."""
    if array.dtype.kind in "OSU":
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()  # last: see common/tensors.py


def _dtype_name(dtype: int) -> str:
    """A TensorFlow DataType number's name, for messages (the number itself when TensorFlow has none)."""
    if not dtype:
        return "an unset dtype"
    try:
        return tf.dtypes.as_dtype(dtype).name
    except TypeError:
        return f"dtype number {dtype}"


def _spec(runtime: ModelRuntime) -> model_pb2.ModelSpec:
    return model_pb2.ModelSpec(name=runtime.name, version={"value": runtime.version}, signature_name=runtime.signature_name)


def _check_signature(runtime: ModelRuntime, requested: str) -> None:
    name = requested or DEFAULT_SIGNATURE
    if name != runtime.signature_name:
        raise SignatureNotFoundError(
            f'Serving signature key "{name}" not found (model {runtime.name} serves "{runtime.signature_name}")'
        )


def _check_input_names(runtime: ModelRuntime, names: list[str]) -> None:
    if names == [runtime.input_key]:
        return
    unknown = sorted(set(names) - {runtime.input_key})
    if unknown:
        raise InvalidInputError(
            f"input tensor alias not found in signature: {unknown[0]}. "
            f"Inputs expected to be in the set {{{runtime.input_key}}}."
        )
    raise InvalidInputError(f"input size does not match signature: missing input {runtime.input_key!r}")


def _output_names(runtime: ModelRuntime, output_filter: list[str]) -> list[str]:
    if not output_filter:
        return list(runtime.outputs)
    for name in output_filter:
        if name not in runtime.outputs:
            raise InvalidInputError(
                f"output tensor alias not found in signature: {name} "
                f"Outputs expected to be in the set {{{','.join(runtime.outputs)}}}."
            )
    if len(set(output_filter)) != len(output_filter):
        raise InvalidInputError(f"duplicate output tensor alias in output_filter: {output_filter}")
    return output_filter
