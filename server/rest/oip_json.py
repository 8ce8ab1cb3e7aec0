"""The Open Inference Protocol's HTTP/REST bodies as its gRPC messages, and back: pure conversion, no aiohttp.

An inference request is a JSON object, optionally followed by the inputs' binary data (Triton's binary tensor
data extension: the ``Inference-Header-Content-Length`` header says how many leading bytes are JSON, and each
binary input declares its ``binary_data_size``). Every input becomes a ``raw_input_contents`` entry of a
``ModelInferRequest``: binary data as sent, JSON numbers converted to the datatype with numpy (no per-element
Python loop), BYTES elements length-prefixed as the protocol's raw encoding. The ``ModelInferResponse`` goes back
as JSON ``data`` (flattened, row-major; BYTES as strings) or as binary data after the JSON, output by output.
Anything malformed raises ``RequestError`` (an HTTP 400), never another exception.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tfclassify.inference import grpc_service_pb2 as pb
from tfclassify.server.apis.oip_tensors import DTYPES, MAX_DIMENSIONS
from tfclassify.server.rest.json_types import json_type

#: The binary tensor data extension's header: how many leading bytes of the body are the JSON object.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Request parameters of the HTTP binding itself, not passed on to the model's request.
BINDING_PARAMETERS = ("binary_data_output", "timeout")
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1
_LENGTH_DIGITS = 19


class RequestError(ValueError):
    """A request body the HTTP binding refuses: an HTTP 400 with this message."""


@dataclass
class InferCall:
    """A parsed inference request: the gRPC message, which outputs to answer as binary data, and the deadline
    Triton's ``timeout`` parameter asks for (seconds from now, or None)."""

    message: pb.ModelInferRequest
    binary_default: bool = False
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    timeout_s: float | None = None

    def binary(self, name: str) -> bool:
        """Whether output ``name`` goes back as binary data."""
        return self.binary_outputs.get(name, self.binary_default)


# -- requests ---------------------------------------------------------------------------------------------------
def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """(JSON header, binary data) of a request body; without ``Inference-Header-Content-Length`` all of it is JSON."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view):]
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _LENGTH_DIGITS):
        raise RequestError(f"the {HEADER_LENGTH} header must be the byte length of the JSON header, a whole number; "
                           f"got {header_length[:40]!r}")
    length = int(text)
    if length > len(body):
        raise RequestError(f"the {HEADER_LENGTH} header says {length:,} bytes of JSON but the body has only "
                           f"{len(body):,} bytes")
    return view[:length], view[length:]


def parse_infer_request(body: bytes, header_length: str | None, model: str, version: str = "") -> InferCall:
    """The ``ModelInferRequest`` of an HTTP inference request body for ``model`` (and ``version``, "" for any)."""
    header, binary = split_body(body, header_length)
    document = _json_object(header)
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    call = InferCall(message)
    request_id = document.get("id")
    if request_id is not None:
        message.id = _string(request_id, "the request's id")
    _parameters(document.get("parameters"), call)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("the request must have \"inputs\": an array of input tensors")
    offset = 0
    for index, tensor in enumerate(inputs):
        offset = _add_input(message, tensor, index, binary, offset)
    if offset != len(binary):
        raise RequestError(f"{len(binary):,} bytes of binary data follow the JSON header but the inputs' "
                           f"binary_data_size add up to {offset:,}")
    outputs = document.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise RequestError("\"outputs\" must be an array of requested outputs")
        for index, output in enumerate(outputs):
            _add_output(call, output, index)
    return call


def _json_object(header: memoryview) -> dict[str, Any]:
    if not len(header):
        raise RequestError("the request has no JSON header: send a JSON object with \"inputs\"")
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the JSON header is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RequestError(f"the JSON header must be an object, not {json_type(document)}")
    return document


def _parameters(parameters: Any, call: InferCall) -> None:
    """The request's parameters: the binding's own (binary_data_output, timeout), the rest passed on."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise RequestError("the request's \"parameters\" must be an object")
    binary = parameters.get("binary_data_output")
    if binary is not None:
        call.binary_default = _bool(binary, "the binary_data_output parameter")
    timeout = parameters.get("timeout")
    if timeout is not None:  # Triton's: microseconds
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= _INT64[1]:
            raise RequestError("the timeout parameter must be a whole number of microseconds")
        call.timeout_s = timeout / 1e6 if timeout else None  # 0: no timeout, as Triton
    for key, value in parameters.items():
        if key not in BINDING_PARAMETERS:
            _set_parameter(call.message.parameters[key], value, f"parameter {key!r}")


def _set_parameter(target: pb.InferParameter, value: Any, what: str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int64_param = value
        elif 0 <= value <= _UINT64_MAX:
            target.uint64_param = value
        else:
            raise RequestError(f"{what} is out of the 64-bit integer range")
    elif isinstance(value, float):
        target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise RequestError(f"{what} must be a boolean, number or string, not {json_type(value)}")


def _add_input(message: pb.ModelInferRequest, tensor: Any, index: int, binary: memoryview, offset: int) -> int:
    """Add input ``index`` as a raw contents entry; returns the offset of the next input's binary data."""
    if not isinstance(tensor, dict):
        raise RequestError(f"input {index} must be an object with name, shape, datatype and data")
    name = _string(tensor.get("name"), f"input {index}'s name")
    datatype = _string(tensor.get("datatype"), f"input '{name}''s datatype")
    if datatype not in DTYPES:
        raise RequestError(f"input '{name}' has datatype {datatype[:40]!r}; the datatypes are {', '.join(DTYPES)}")
    shape = _shape(tensor.get("shape"), name)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(f"input '{name}''s \"parameters\" must be an object")
    if "shared_memory_region" in parameters:
        raise RequestError(f"input '{name}': shared memory is not supported; send the data in the request")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RequestError(f"input '{name}''s binary_data_size must be a whole number of bytes")
        if "data" in tensor:
            raise RequestError(f"input '{name}' has both \"data\" and binary data (binary_data_size); send one")
        if offset + size > len(binary):
            raise RequestError(f"input '{name}' declares {size:,} bytes of binary data but only "
                               f"{len(binary) - offset:,} remain after the JSON header")
        raw = bytes(binary[offset:offset + size])
        offset += size
    elif "data" in tensor:
        raw = json_data_raw(tensor["data"], datatype, shape, name)
    else:
        raise RequestError(f"input '{name}' has no data: send \"data\" or binary data (binary_data_size)")
    message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.append(raw)
    return offset


def _shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _INT64[1] for d in shape
    ):
        raise RequestError(f"input '{name}''s shape must be an array of dimensions, whole numbers 0 or more")
    if len(shape) > MAX_DIMENSIONS:  # before any product of them is taken or printed
        raise RequestError(f"input '{name}' has {len(shape)} dimensions; a batch of images has at most "
                           f"{MAX_DIMENSIONS}")
    return shape


def json_data_raw(data: Any, datatype: str, shape: list[int], name: str) -> bytes:
    """An input's JSON ``data`` (flat or nested arrays, row-major) as the protocol's raw contents of ``datatype``."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _flat_strings(data, name)
        _check_count(len(items), count, shape, name)
        encoded = [item.encode() for item in items]
        return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    if not isinstance(data, list):
        raise RequestError(f"input '{name}''s data must be an array of numbers")
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError):
        raise RequestError(f"input '{name}''s data is a ragged array; it must be rectangular, or flat") from None
    _check_count(array.size, count, shape, name)
    if array.dtype.kind == "f" and DTYPES[datatype].kind == "u":
        array = _unsigned_past_int64(data, array)
    if array.size:
        _check_values(array, datatype, name)
    return array.astype(DTYPES[datatype]).tobytes()


def _unsigned_past_int64(data: list, array: np.ndarray) -> np.ndarray:
    """``data`` as uint64 when it holds only whole numbers and some from 2**63 on, which numpy reads as floats
    beside smaller ones (a UINT64 input's top half); else ``array`` as numpy read it."""
    exact = np.asarray(data, dtype=object).ravel()
    if all(type(v) is int and 0 <= v < 2**64 for v in exact):
        return exact.astype(np.uint64).reshape(array.shape)
    return array


def _check_count(found: int, count: int, shape: list[int], name: str) -> None:
    if found != count:
        raise RequestError(f"input '{name}' has {found:,} elements of data; shape {shape} needs {count:,}")


def _check_values(array: np.ndarray, datatype: str, name: str) -> None:
    """Booleans for BOOL, integers in range for integer datatypes, numbers for floats."""
    dtype = DTYPES[datatype]
    kind = array.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise RequestError(f"input '{name}' is BOOL: its data must be true and false")
    elif dtype.kind in "iu":
        if kind not in "iu":
            raise RequestError(f"input '{name}' is {datatype}: its data must be whole numbers")
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise RequestError(f"input '{name}': values outside the {datatype} range {info.min}..{info.max}")
    elif kind not in "iuf":
        raise RequestError(f"input '{name}' is {datatype}: its data must be numbers")


def _flat_strings(data: Any, name: str) -> list[str]:
    """The strings of a BYTES input's data, flattened row-major."""
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise RequestError(f"input '{name}' is BYTES: its data must be an array of strings")
    items: list[str] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise RequestError(f"input '{name}' is BYTES: its data must be strings (send binary data for "
                                   "files), not " + json_type(item))
            items.append(item)
        else:
            stack.pop()
    return items


def _add_output(call: InferCall, output: Any, index: int) -> None:
    if not isinstance(output, dict):
        raise RequestError(f"output {index} must be an object with a name")
    name = _string(output.get("name"), f"output {index}'s name")
    requested = call.message.outputs.add(name=name)
    parameters = output.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(f"output '{name}''s \"parameters\" must be an object")
    if "shared_memory_region" in parameters:
        raise RequestError(f"output '{name}': shared memory is not supported; the data comes back in the response")
    for key, value in parameters.items():
        if key == "binary_data":
            call.binary_outputs[name] = _bool(value, f"output '{name}''s binary_data")
        elif key == "classification":
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError(f"output '{name}''s classification must be a whole number of classes")
            _set_parameter(requested.parameters[key], value, f"output '{name}''s classification")
        else:
            _set_parameter(requested.parameters[key], value, f"output '{name}''s parameter {key!r}")


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{what} must be a string, not {json_type(value)}")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{what} must be true or false, not {json_type(value)}")
    return value


# -- responses --------------------------------------------------------------------------------------------------
def infer_response_body(response: pb.ModelInferResponse, call: InferCall) -> tuple[bytes, int | None]:
    """(body, JSON header length) of the HTTP answer to ``call``: the length is None when no output is binary
    (the body is all JSON), else the binary outputs' data follows the JSON in output order."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise ValueError("the response must carry its outputs in raw_output_contents")
    outputs = []
    chunks: list[bytes] = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if call.binary(tensor.name):
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = raw_json_data(raw, tensor.datatype)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = {key: _parameter_value(value) for key, value in response.parameters.items()}
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def raw_json_data(raw: bytes, datatype: str) -> Any:
    """Raw output contents as JSON data: a flat numpy array (orjson writes it) or, for BYTES, a list of strings."""
    if datatype == "BYTES":
        return [item.decode("utf-8", "replace") for item in split_bytes(raw)]
    array = np.frombuffer(raw, DTYPES[datatype])
    return array.astype(np.float32) if datatype == "FP16" else array  # JSON numbers: float16 values are float32 ones


def split_bytes(raw: bytes) -> list[bytes]:
    """The elements of raw BYTES contents (each a 4-byte little-endian length, then the bytes)."""
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset:offset + length])
        offset += length
    return items


def _parameter_value(parameter: pb.InferParameter) -> Any:
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


# -- other messages ---------------------------------------------------------------------------------------------
def message_json(message: Message, fill: bool = False) -> dict[str, Any]:
    """A protobuf message as Triton's HTTP JSON: the proto field names, every scalar (defaults too), 64-bit
    integers as numbers (protobuf's own JSON mapping writes them as strings), enums by name, only the set member
    of a oneof; unset messages are left out, or written with their defaults when ``fill`` (statistics)."""
    out: dict[str, Any] = {}
    for descriptor in message.DESCRIPTOR.fields:
        if descriptor.containing_oneof is not None and not message.HasField(descriptor.name):
            continue
        value = getattr(message, descriptor.name)
        if _is_map(descriptor):
            value_field = descriptor.message_type.fields_by_name["value"]
            out[descriptor.name] = {key: _field_value(value_field, item, fill) for key, item in value.items()}
        elif _is_repeated(descriptor):
            out[descriptor.name] = [_field_value(descriptor, item, fill) for item in value]
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if fill or message.HasField(descriptor.name):
                out[descriptor.name] = message_json(value, fill)
        else:
            out[descriptor.name] = _field_value(descriptor, value, fill)
    return out


def _is_repeated(descriptor: FieldDescriptor) -> bool:
    repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 5.29; label is deprecated there
    if repeated is not None:
        return bool(repeated)
    return descriptor.label == FieldDescriptor.LABEL_REPEATED


def _is_map(descriptor: FieldDescriptor) -> bool:
    return (descriptor.type == FieldDescriptor.TYPE_MESSAGE and _is_repeated(descriptor)
            and descriptor.message_type.GetOptions().map_entry)


def _field_value(descriptor: FieldDescriptor, value: Any, fill: bool) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value, fill)
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        enum_value = descriptor.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        return value.decode("utf-8", "replace")
    return value


def json_body(document: Mapping[str, Any]) -> bytes:
    """``document`` as JSON bytes (numpy arrays allowed)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
