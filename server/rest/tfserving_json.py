"""TensorFlow Serving's REST JSON as protobuf messages and back, with no HTTP in it (the routes are in
``tfserving.py``).

It follows TensorFlow Serving's own conversion (``util/json_tensor.cc``) and its messages: the row format
(``instances``) and the columnar format (``inputs``) of ``:predict``, ``{"b64": ...}`` for binary values,
tf.Example objects for ``:classify``, and the answers shaped as TensorFlow Serving shapes them. Numbers become
numpy arrays of the signature's dtype at once (``np.asarray``), so a batch of images costs one pass in C; the
structure is walked in Python only to explain a malformed request. Two extensions: base64 values for a pixel
input are sent as a ``DT_STRING`` batch of PNG/JPEG files (the Predict RPC decodes them as the model declares),
and integers out of the dtype's range are refused rather than truncated. JSON has no NaN or Infinity (orjson
parses strict JSON), so those are refused where TensorFlow Serving takes them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
)

ROW, COLUMNAR = "row", "columnar"
SIGNATURE_KEY, INSTANCES_KEY, INPUTS_KEY = "signature_name", "instances", "inputs"
CONTEXT_KEY, EXAMPLES_KEY, B64_KEY = "context", "examples", "b64"
#: Outputs named so, of DT_STRING, are answered as base64 objects (TensorFlow Serving's convention, from CMLE).
BYTES_SUFFIX = "_bytes"

#: The numpy dtype of each TensorFlow DataType a JSON value can hold, and TensorFlow's name for it.
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int8"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int16"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int32"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "uint8"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "uint16"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool"),
    types_pb2.DT_STRING: (np.dtype(object), "string"),
}
_ENUMS = {dtype: enum for enum, (dtype, _) in _DTYPES.items() if enum != types_pb2.DT_STRING}
_SNIPPET_CHARS = 120


class JsonRequestError(ValueError):
    """A request body TensorFlow Serving's REST API refuses (HTTP 400), with its message."""


# -- small helpers ------------------------------------------------------------------------------------------
def snippet(value: Any) -> str:
    """A JSON value as text for messages, cut short."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # past orjson's nesting limit (the parser's is deeper), or not JSON at all
        try:
            text = repr(value)
        except RecursionError:
            text = f"<{json_type(value)} nested too deep to show>"
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


_TYPE_NAMES: dict[type, str] = {str: "String", list: "Array", dict: "Object"}


def json_type(value: Any) -> str:
    """TensorFlow Serving's name of a JSON value's type (``JsonTypeString``)."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def dtype_name(dtype: int) -> str:
    """TensorFlow's name of a DataType number (``DataTypeString``)."""
    entry = _DTYPES.get(dtype)
    if entry:
        return entry[1]
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"dtype {dtype}"


def is_b64(value: Any) -> bool:
    """Whether ``value`` is a base64 object: ``{"b64": "<string>"}`` and nothing else."""
    return type(value) is dict and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def decode_b64(value: Any) -> bytes:
    """The bytes of a base64 object; ``JsonRequestError`` when it is not one or does not decode."""
    if not is_b64(value):
        raise JsonRequestError(f"JSON Value: {snippet(value)} not formatted correctly for base64 data")
    text = value[B64_KEY]
    try:  # padding optional, and the URL-safe alphabet too, as absl's Base64Unescape and WebSafeBase64 take
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text)
                                else None, validate=True)
    except (binascii.Error, ValueError):
        raise JsonRequestError("Unable to base64 decode") from None


def _dense_shape(value: Any) -> list[int]:
    """The shape a nested list claims by its first elements (TensorFlow Serving's ``GetDenseTensorShape``)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_text(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _first_leaf(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _ragged_reason(value: Any, shape: list[int], level: int = 0) -> str | None:
    """Why ``value`` is not a dense tensor of ``shape`` (TensorFlow Serving's ``FillTensorProto`` messages)."""
    if not isinstance(value, list):
        if level != len(shape):
            return (f"JSON Value: {snippet(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {len(shape)}")
        return None
    if level >= len(shape):
        return f"Encountered list at unexpected level: {level} expected < {len(shape)}"
    if len(value) != shape[level]:
        return (f"Encountered list at unexpected size: {len(value)} at level: {level} "
                f"expected size: {shape[level]}")
    for item in value:
        reason = _ragged_reason(item, shape, level + 1)
        if reason:
            return reason
    return None


# -- JSON values as tensors ---------------------------------------------------------------------------------
def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A numeric array as a TensorProto: dtype, shape and ``tensor_content`` (how clients pack arrays)."""
    proto = tensor_pb2.TensorProto(dtype=_ENUMS[array.dtype])
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def string_proto(values: list[bytes], shape: list[int] | tuple[int, ...]) -> tensor_pb2.TensorProto:
    """A ``DT_STRING`` TensorProto of ``values`` (row-major) with ``shape``."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    return proto


def array_of(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto's values as a numpy array (strings as an object array of bytes)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), object)
        values[:] = list(proto.string_val)
        return values.reshape(shape)
    if proto.dtype not in _DTYPES:
        raise JsonRequestError(f"Failed to write JSON value for tensor type: {dtype_name(proto.dtype)}")
    dtype = _DTYPES[proto.dtype][0]
    content = proto.tensor_content
    if content:
        return np.frombuffer(content, dtype).reshape(shape)
    field = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val", np.dtype(np.int64): "int64_val",
             np.dtype(np.bool_): "bool_val", np.dtype(np.uint32): "uint32_val", np.dtype(np.uint64): "uint64_val",
             np.dtype(np.float16): "half_val"}.get(dtype, "int_val")
    values = np.asarray(getattr(proto, field), dtype if field != "half_val" else np.uint16)
    if field == "half_val":
        values = values.view(np.float16)
    size = int(np.prod(shape))
    if values.size == 1 and size != 1:  # one value stands for all, as TensorFlow reads it
        values = np.full(size, values[0], dtype)
    return values.reshape(shape)


def numeric_array(value: Any, dtype: int, what: str = "") -> np.ndarray:
    """A nested list of JSON numbers as an array of ``dtype`` (a DataType number); ``JsonRequestError`` when it is
    ragged, holds other types or values the dtype cannot hold."""
    target, name = _DTYPES[dtype]
    prefix = f"{what}: " if what else ""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:  # ragged lists: numpy says inhomogeneous
        raise JsonRequestError(prefix + (_ragged_reason(value, _dense_shape(value)) or str(exc))) from None
    kind = array.dtype.kind
    if array.size == 0 and kind == "f":  # empty lists: numpy calls them float
        return array.astype(target)
    if kind == "b" and target.kind == "b":
        return array
    if kind not in "iuf" or target.kind == "b" or (kind == "f" and target.kind in "iu"):
        found, bad = _first_wrong_leaf(value, target)
        if found:
            raise JsonRequestError(f"{prefix}JSON Value: {snippet(bad)} Type: {json_type(bad)} is not of expected "
                                   f"type: {name}")
        raise JsonRequestError(f"{prefix}the values are not all JSON numbers of type {name}")
    if array.size and target.kind in "iu":
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise JsonRequestError(f"{prefix}JSON Value: {bad} is out of range for {name} ({info.min} to {info.max})")
    if array.size and target.kind == "f":
        _check_lossless(array, target, name, prefix)
    return array.astype(target, copy=False)


def _first_wrong_leaf(value: Any, target: np.dtype) -> tuple[bool, Any]:
    """(found, the first value of a nested list that ``target`` cannot take), for the message."""
    if isinstance(value, list):
        for item in value:
            found, bad = _first_wrong_leaf(item, target)
            if found:
                return True, bad
        return False, None
    if target.kind == "b":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, int if target.kind in "iu" else (int, float)) and not isinstance(value, bool)
    return not ok, value


def _check_lossless(array: np.ndarray, target: np.dtype, name: str, prefix: str) -> None:
    """TensorFlow Serving's ``IsLosslessDecimal``: integers past the mantissa and decimals past the range refused."""
    info = np.finfo(target)
    if array.dtype.kind in "iu":
        limit = (1 << (info.nmant + 1)) - 1
        bad = array[np.abs(array.astype(np.float64)) > limit] if array.dtype.kind == "i" else array[array > limit]
    else:
        bad = array[np.abs(array) > info.max] if target.itemsize < array.dtype.itemsize else array[:0]
    if bad.size:
        raise JsonRequestError(f"{prefix}Cannot convert JSON value: {bad.flat[0]} to {name} without loss of precision.")


def string_tensor(value: Any, dtype: int, what: str = "") -> tensor_pb2.TensorProto:
    """A nested list of base64 objects (or, for a ``DT_STRING`` input, strings) as a ``DT_STRING`` TensorProto."""
    shape = _dense_shape(value)
    reason = _ragged_reason(value, shape)
    prefix = f"{what}: " if what else ""
    if reason:
        raise JsonRequestError(prefix + reason)
    values: list[bytes] = []
    _collect_strings(value, dtype, values, prefix)
    return string_proto(values, shape)


def _collect_strings(value: Any, dtype: int, out: list[bytes], prefix: str) -> None:
    if isinstance(value, list):
        for item in value:
            _collect_strings(item, dtype, out, prefix)
    elif type(value) is dict:
        try:
            out.append(decode_b64(value))
        except JsonRequestError as exc:
            raise JsonRequestError(prefix + str(exc)) from None
    elif isinstance(value, str) and dtype == types_pb2.DT_STRING:
        out.append(value.encode())
    else:
        raise JsonRequestError(f"{prefix}JSON Value: {snippet(value)} Type: {json_type(value)} is not of expected "
                               f"type: {dtype_name(dtype)}")


def json_tensor(value: Any, dtype: int, what: str = "") -> tensor_pb2.TensorProto:
    """A JSON value (a number, or a nested list) as the TensorProto of an input of ``dtype``: numbers packed as the
    signature's dtype; base64 objects as bytes (``DT_STRING``: for a pixel input, PNG/JPEG files)."""
    leaf = _first_leaf(value)
    if type(leaf) is dict or dtype == types_pb2.DT_STRING:
        return string_tensor(value, dtype, what)
    if dtype not in _DTYPES:
        raise JsonRequestError(f"Conversion of JSON Value: {snippet(leaf)} to type: {dtype_name(dtype)} is not "
                               "supported")
    return tensor_proto(numeric_array(value, dtype, what))


# -- :predict ----------------------------------------------------------------------------------------------
def signature_name(body: Mapping[str, Any]) -> str:
    """The body's ``signature_name`` ('' when absent); ``JsonRequestError`` unless a string."""
    name = body.get(SIGNATURE_KEY, "")
    if not isinstance(name, str):
        raise JsonRequestError(f"JSON Value: {snippet(body)} not formatted correctly. 'signature_name' key must be a "
                               "string value.")
    return name


def predict_inputs(body: Mapping[str, Any], inputs: Mapping[str, int]) -> tuple[str, dict[str, tensor_pb2.TensorProto]]:
    """The request format (``ROW`` or ``COLUMNAR``) and the input tensors of a ``:predict`` body, for a signature
    whose ``inputs`` are {name: DataType number}."""
    has_instances, has_inputs = INSTANCES_KEY in body, INPUTS_KEY in body
    if has_instances and has_inputs:
        raise JsonRequestError(f"JSON Value: {snippet(body)} Not formatted correctly expecting only one of 'inputs' "
                               "or 'instances' keys to exist ")
    if has_instances:
        return ROW, _row_tensors(body[INSTANCES_KEY], body, inputs)
    if has_inputs:
        return COLUMNAR, _columnar_tensors(body[INPUTS_KEY], inputs)
    raise JsonRequestError("Missing 'inputs' or 'instances' key")


def _is_element_object(value: Any) -> bool:
    return type(value) is dict and not is_b64(value)


def _row_tensors(instances: Any, body: Mapping[str, Any],
                 inputs: Mapping[str, int]) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances, list):
        raise JsonRequestError(f"JSON Value: {snippet(body)} Excepting 'instances' to be an list/array")
    if not instances:
        raise JsonRequestError(f"JSON Value: {snippet(body)} No values in 'instances' array")
    objects = _is_element_object(instances[0])
    if not objects and len(inputs) > 1:
        raise JsonRequestError("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")
    for i, item in enumerate(instances):
        if _is_element_object(item) != objects:
            raise JsonRequestError(f"Expecting object but got list at item {i} of input list" if objects else
                                   f"Expecting value/list but got object at item {i} of input list")
    if not objects:
        name = next(iter(inputs))
        return {name: _batch(instances, inputs[name], name)}
    names = set(inputs)
    for i, item in enumerate(instances):
        unknown = sorted(set(item) - names)
        if unknown:
            raise JsonRequestError(f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. Error: "
                                   f"JSON object: does not have named input: {unknown[0]}")
        if set(item) != names:
            raise JsonRequestError(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                   f"{snippet(item)} must only have keys: {','.join(sorted(names))}")
    return {name: _batch([item[name] for item in instances], dtype, name) for name, dtype in inputs.items()}


def _batch(items: list[Any], dtype: int, name: str) -> tensor_pb2.TensorProto:
    """The elements of ``instances`` for one input as one batch; when they differ in shape, which one and how."""
    try:
        return json_tensor(items, dtype)
    except JsonRequestError as exc:
        shape = _dense_shape(items[0])
        for i, item in enumerate(items):  # only when it failed: find the element, as TensorFlow Serving reports it
            own = _dense_shape(item)
            reason = _ragged_reason(item, own) or (
                own != shape and f"Expecting shape {_shape_text(shape)} but got: {_shape_text(own)}"
            ) or _error_of(item, dtype)
            if reason:
                raise JsonRequestError(f"Failed to process element: {i} of 'instances' list. Error: {reason}") from None
        raise JsonRequestError(f"Failed to process 'instances' list, input {name}. Error: {exc}") from None


def _error_of(value: Any, dtype: int) -> str | None:
    try:
        json_tensor(value, dtype)
    except JsonRequestError as exc:
        return str(exc)
    return None


def _columnar_tensors(value: Any, inputs: Mapping[str, int]) -> dict[str, tensor_pb2.TensorProto]:
    if not _is_element_object(value):
        if len(inputs) > 1:
            raise JsonRequestError("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        name = next(iter(inputs))
        return {name: json_tensor(value, inputs[name])}
    tensors = {}
    for name, dtype in inputs.items():
        if name not in value:
            raise JsonRequestError(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(value[name], dtype, name)
    return tensors


def predict_json(outputs: Mapping[str, tensor_pb2.TensorProto], request_format: str) -> dict[str, Any]:
    """The answer to ``:predict``: ``{"predictions": ...}`` per instance (row format) or ``{"outputs": ...}``
    (columnar), the bare values of a single output or an object keyed by output name (arrays: serialize with
    ``orjson.OPT_SERIALIZE_NUMPY``, which writes float32 values as their shortest decimals, as TF Serving does)."""
    if not outputs:
        raise JsonRequestError("Cannot convert empty tensor map to JSON")
    arrays = {name: _json_ready(name, proto) for name, proto in outputs.items()}
    if request_format == COLUMNAR:
        return {"outputs": next(iter(arrays.values())) if len(arrays) == 1 else arrays}
    batch = 0
    for name, proto in outputs.items():
        shape = [d.size for d in proto.tensor_shape.dim]
        if not shape:
            raise JsonRequestError(f"Tensor name: {name} has no shape information ")
        if shape[0] < 1:
            raise JsonRequestError(f"Tensor name: {name} has invalid batch size: {shape[0]}")
        if batch and shape[0] != batch:
            raise JsonRequestError(f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}")
        batch = shape[0]
    if len(arrays) == 1:
        return {"predictions": next(iter(arrays.values()))}
    return {"predictions": [{name: values[i] for name, values in arrays.items()} for i in range(batch)]}


def _json_ready(name: str, proto: tensor_pb2.TensorProto) -> Any:
    """An output as orjson writes it: a numeric array, or nested lists of strings or base64 objects."""
    array = array_of(proto)
    if array.dtype != object:
        return np.ascontiguousarray(array)  # orjson writes C-contiguous arrays only
    as_b64 = name.endswith(BYTES_SUFFIX)
    values = [{B64_KEY: base64.b64encode(v).decode()} if as_b64 else v.decode("utf-8", "replace")
              for v in array.ravel().tolist()]
    return _nest(values, array.shape)


def _nest(values: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return values[0]
    if len(shape) == 1:
        return values
    step = len(values) // shape[0] if shape[0] else 0
    return [_nest(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


# -- :classify ---------------------------------------------------------------------------------------------
def examples_input(body: Mapping[str, Any]) -> input_pb2.Input:
    """The ``Input`` of a ``:classify`` (or ``:regress``) body: ``examples``, a list of tf.Example objects
    (feature name: a value or a list of values), and the optional ``context`` example they share."""
    result = input_pb2.Input()
    context = CONTEXT_KEY in body
    if context:
        result.example_list_with_context.context.CopyFrom(example_of(body[CONTEXT_KEY]))
    examples = body.get(EXAMPLES_KEY)
    if EXAMPLES_KEY not in body:
        raise JsonRequestError(f"JSON Value: {snippet(body)} When method is classify, key 'examples' is expected and "
                               "was not found")
    if not isinstance(examples, list):
        raise JsonRequestError(f"JSON Value: {snippet(body)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise JsonRequestError(f"JSON Value: {snippet(body)} 'examples' value is an empty array")
    target = result.example_list_with_context.examples if context else result.example_list.examples
    target.extend(example_of(value) for value in examples)
    return result


def example_of(value: Any) -> example_pb2.Example:
    """A tf.Example from its JSON object (TensorFlow Serving's ``MakeExampleFromJsonObject``)."""
    if type(value) is not dict:
        raise JsonRequestError(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(feature_of(name, content))
    return example


def feature_of(name: str, content: Any) -> feature_pb2.Feature:
    """One feature from a JSON value or list: integers and booleans → int64, decimals → float, strings and base64
    objects → bytes; kinds may not mix."""
    values = content if isinstance(content, list) else [content]
    feature = feature_pb2.Feature()
    kinds = set(map(type, values))
    if kinds == {int}:  # the common cases in one pass each: pixel lists
        if any(v > (1 << 63) - 1 for v in values if v > 0):
            raise JsonRequestError(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.extend(values)
        return feature
    if kinds == {float}:
        _check_lossless(np.asarray(values), np.dtype(np.float32), "float", "")
        feature.float_list.value.extend(values)
        return feature
    for item in values:  # mixed or unusual values: one by one, with TensorFlow Serving's messages
        _add_to_feature(item, name, feature)
    return feature


_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_to_feature(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    if value is None or isinstance(value, list) or (type(value) is dict and not is_b64(value)):
        raise JsonRequestError(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, int):  # booleans too: 1 and 0, as TensorFlow Serving stores them
        kind = "int64_list"
    elif isinstance(value, float):
        kind = "float_list"
    else:
        kind = "bytes_list"
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise JsonRequestError(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}")
    if kind == "int64_list":
        if value > (1 << 63) - 1:
            raise JsonRequestError(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(int(value))
    elif kind == "float_list":
        _check_lossless(np.asarray([value]), np.dtype(np.float32), "float", "")
        feature.float_list.value.append(value)
    else:
        feature.bytes_list.value.append(decode_b64(value) if type(value) is dict else value.encode())


def classify_json(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """``{"results": [[[label, score], ...], ...]}``: each example's classes, scores as float32 decimals."""
    if not result.classifications:
        raise JsonRequestError("Cannot convert empty ClassificationResults to JSON")
    results = []
    for classification in result.classifications:
        scores = np.array([c.score for c in classification.classes], np.float32)
        results.append([[c.label, score] for c, score in zip(classification.classes, scores)])
    return {"results": results}


# -- status and metadata -----------------------------------------------------------------------------------
def _as_dict(message: Any) -> dict[str, Any]:
    """A message in TensorFlow Serving's JSON: proto field names, every field printed (int64s as strings)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict[str, Any]:
    """``{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {...}}]}`` (an OK status is
    printed as TensorFlow Serving prints it: error code OK, empty message)."""
    response = get_model_status_pb2.GetModelStatusResponse.FromString(response.SerializeToString())
    for entry in response.model_version_status:
        entry.status.SetInParent()
    return _as_dict(response)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict[str, Any]:
    """``{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {...}}}}`` (the SignatureDefMap
    unpacked, as TensorFlow Serving prints it)."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" in response.metadata:
        response.metadata["signature_def"].Unpack(signatures)
    return {"model_spec": _as_dict(response.model_spec), "metadata": {"signature_def": _as_dict(signatures)}}
