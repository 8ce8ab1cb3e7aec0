"""The Open Inference Protocol's HTTP bodies <-> gRPC messages (server/rest/oip_json.py), without a server."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfclassify.inference import grpc_service_pb2 as pb
from tfclassify.inference import model_config_pb2 as config_pb
from tfclassify.server.apis.oip_tensors import DTYPES, from_raw, from_raw_bytes
from tfclassify.server.rest.oip_json import (
    HEADER_LENGTH,
    InferCall,
    RequestError,
    infer_response_body,
    json_data_raw,
    message_json,
    parse_infer_request,
    split_body,
    split_bytes,
)

NUMERIC = [name for name in DTYPES if name not in ("BYTES", "BOOL", "FP16")]


def with_binary(document: dict, *chunks: bytes) -> tuple[bytes, str]:
    header = orjson.dumps(document)
    return header + b"".join(chunks), str(len(header))


def response(*outputs: tuple[str, str, list[int], bytes]) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
    for name, datatype, shape, raw in outputs:
        message.outputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_output_contents.append(raw)
    return message


def test_binary_and_json_inputs_become_raw_contents_in_order():
    document = {"id": "a", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "UINT8", "parameters": {"binary_data_size": 4}},
        {"name": "y", "shape": [2], "datatype": "FP32", "data": [0.5, 2]},
        {"name": "z", "shape": [2], "datatype": "BYTES", "data": ["ab", "é"]},
        {"name": "w", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}},
    ]}
    body, length = with_binary(document, b"\x01\x02\x03\x04", b"\x03\x00\x00\x00abc")
    call = parse_infer_request(body, length, "model", "3")
    message = call.message
    assert (message.model_name, message.model_version, message.id) == ("model", "3", "a")
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("x", "UINT8", [2, 2]), ("y", "FP32", [2]), ("z", "BYTES", [2]), ("w", "BYTES", [1])]
    raw = list(message.raw_input_contents)
    assert raw[0] == b"\x01\x02\x03\x04"
    assert np.frombuffer(raw[1], "<f4").tolist() == [0.5, 2.0]
    assert split_bytes(raw[2]) == [b"ab", "é".encode()]
    assert raw[3] == b"\x03\x00\x00\x00abc"


def test_parameters_outputs_and_timeout():
    document = {"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [7]}],
                "outputs": [{"name": "p", "parameters": {"classification": 3, "binary_data": True}}, {"name": "c"}],
                "parameters": {"binary_data_output": False, "timeout": 2_500_000, "true_classes": "1",
                               "keep_for_feedback": True, "weight": 0.5, "big": 2**63}}
    call = parse_infer_request(orjson.dumps(document), None, "m")
    assert call.timeout_s == 2.5 and call.binary("p") and not call.binary("c")
    parameters = call.message.parameters
    assert set(parameters) == {"true_classes", "keep_for_feedback", "weight", "big"}
    assert parameters["true_classes"].string_param == "1" and parameters["keep_for_feedback"].bool_param
    assert parameters["weight"].double_param == 0.5 and parameters["big"].uint64_param == 2**63
    assert call.message.outputs[0].parameters["classification"].int64_param == 3
    assert not call.message.outputs[1].parameters
    # No outputs named and binary_data_output: every output binary (what tritonclient sends).
    document = {"inputs": document["inputs"], "parameters": {"binary_data_output": True}}
    assert parse_infer_request(orjson.dumps(document), None, "m").binary("anything")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NUMERIC).flatmap(lambda name: st.tuples(
    st.just(name), hnp.arrays(DTYPES[name], hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                              elements={"allow_nan": False, "allow_infinity": False} if DTYPES[name].kind == "f"
                              else None))))
def test_json_numbers_and_nested_lists_round_trip_through_raw(case):
    datatype, array = case
    shape = list(array.shape)
    for data in (array.ravel().tolist(), array.tolist()):  # flat, and nested as KServe's examples send
        raw = json_data_raw(data, datatype, shape, "x")
        np.testing.assert_array_equal(from_raw(raw, datatype, tuple(shape), "x"), array)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=0, max_size=6))
def test_bytes_data_is_length_prefixed_as_the_protocols_raw_encoding(items):
    raw = json_data_raw(items, "BYTES", [len(items)], "s")
    assert split_bytes(raw) == [item.encode() for item in items]
    if items:
        assert from_raw_bytes(raw, (len(items),), "s").tolist() == [item.encode() for item in items]


def test_uint64_data_past_int64_is_read_exactly():
    # numpy reads [2**63, 0] as floats (2**63 does not fit int64): hypothesis found such an input refused.
    raw = json_data_raw([[2**63, 0], [2**64 - 1, 7]], "UINT64", [2, 2], "x")
    assert np.frombuffer(raw, "<u8").tolist() == [2**63, 0, 2**64 - 1, 7]
    with pytest.raises(RequestError, match="whole numbers"):
        json_data_raw([2**63, 0.5], "UINT64", [2], "x")


def test_bool_and_fp16_data():
    assert json_data_raw([True, False], "BOOL", [2], "b") == b"\x01\x00"
    assert np.frombuffer(json_data_raw([1.5, -2], "FP16", [2], "h"), "<f2").tolist() == [1.5, -2.0]


@pytest.mark.parametrize(("body", "length", "message"), [
    (b"", None, "the request has no JSON header"),
    (b"nope", None, "the JSON header is not valid JSON"),
    (b'"x"', None, "the JSON header must be an object, not a string"),
    (b"{}", None, 'the request must have "inputs"'),
    (b'{"inputs": {}}', None, 'the request must have "inputs"'),
    (b'{"inputs": [1]}', None, "input 0 must be an object"),
    (b'{"inputs": [{"shape": [1], "datatype": "UINT8", "data": [1]}]}', None, "input 0's name must be a string"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "U8", "data": [1]}]}', None,
     "input 'x' has datatype 'U8'"),
    (b'{"inputs": [{"name": "x", "shape": [1, true], "datatype": "UINT8", "data": [1]}]}', None,
     "input 'x''s shape must be an array of dimensions"),
    (b'{"inputs": [{"name": "x", "shape": [9223372036854775808], "datatype": "UINT8", "data": [1]}]}', None,
     "input 'x''s shape must be an array of dimensions"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "data": [1]}]}', None,
     "input 'x' has 1 elements of data; shape [2] needs 2"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 128]}]}', None,
     "input 'x': values outside the INT8 range -128..127"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 1.5]}]}', None,
     "input 'x' is INT32: its data must be whole numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [18446744073709551616]}]}', None,
     "input 'x'"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, null]}]}', None,
     "input 'x' is FP32: its data must be numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}', None,
     "input 'x' is BOOL: its data must be true and false"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}]}', None,
     "input 'x' is BYTES: its data must be strings"),
    (b'{"inputs": [{"name": "x", "shape": [2,2], "datatype": "FP32", "data": [[1, 2], [3]]}]}', None,
     "input 'x''s data is a ragged array"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1],'
     b' "parameters": {"binary_data_size": 1}}]}', None, "input 'x' has both \"data\" and binary data"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "parameters": {"binary_data_size": -1}}]}',
     None, "input 'x''s binary_data_size must be a whole number"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "parameters": {"shared_memory_region": "r"}}]}',
     None, "input 'x': shared memory is not supported"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1]}], "outputs": [{"name": "p", '
     b'"parameters": {"classification": "3"}}]}', None, "output 'p''s classification must be a whole number"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1]}], "parameters": {"a": [1]}}',
     None, "parameter 'a' must be a boolean, number or string, not an array"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1]}], "id": 3}', None,
     "the request's id must be a string, not a number"),
    (b'{"inputs": []}', "x1", f"the {HEADER_LENGTH} header must be the byte length"),
    (b'{"inputs": []}', "15", f"the {HEADER_LENGTH} header says 15 bytes of JSON but the body has only 14 bytes"),
])
def test_malformed_requests_raise_request_error(body, length, message):
    with pytest.raises(RequestError) as info:
        parse_infer_request(body, length, "m")
    assert str(info.value).startswith(message), str(info.value)


def test_binary_sizes_must_add_up_to_the_data_after_the_header():
    document = {"inputs": [{"name": "x", "shape": [4], "datatype": "UINT8", "parameters": {"binary_data_size": 4}}]}
    with pytest.raises(RequestError, match="declares 4 bytes of binary data but only 3 remain"):
        parse_infer_request(*with_binary(document, b"abc"), "m")
    with pytest.raises(RequestError, match="5 bytes of binary data follow the JSON header but the inputs' "
                                           "binary_data_size add up to 4"):
        parse_infer_request(*with_binary(document, b"abcde"), "m")


@given(st.binary(max_size=64), st.one_of(st.none(), st.text(max_size=6)))
def test_arbitrary_bodies_never_raise_anything_but_request_error(body, length):
    try:
        parse_infer_request(body, length, "m")
    except RequestError:
        pass


def test_split_body():
    header, binary = split_body(b"{}abc", "2")
    assert bytes(header) == b"{}" and bytes(binary) == b"abc"
    header, binary = split_body(b"{}", None)
    assert bytes(header) == b"{}" and bytes(binary) == b""


def test_response_binary_and_json_outputs():
    probabilities = np.array([[0.1, 0.9]], "<f4")
    classes = np.array([1], "<i4")
    labels = struct.pack("<I", 5) + b"0.9:1" + struct.pack("<I", 3) + b"\xc3\xa9x"
    message = response(("p", "FP32", [1, 2], probabilities.tobytes()), ("c", "INT32", [1], classes.tobytes()),
                       ("l", "BYTES", [1, 2], labels))
    call = InferCall(pb.ModelInferRequest(), binary_default=False, binary_outputs={"p": True})
    body, length = infer_response_body(message, call)
    document = orjson.loads(body[:length])
    assert document["model_name"] == "m" and document["model_version"] == "1" and document["id"] == "r"
    p, c, labels_json = document["outputs"]
    assert p == {"name": "p", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    assert body[length:] == probabilities.tobytes()
    assert c["data"] == [1] and labels_json["data"] == ["0.9:1", "éx"]
    # As JSON, a float32 is written so that it reads back as the same float32.
    all_json, _ = infer_response_body(message, InferCall(pb.ModelInferRequest()))
    assert np.array(orjson.loads(all_json)["outputs"][0]["data"], np.float32).tolist() == probabilities[0].tolist()


def test_all_json_response_has_no_header_length():
    message = response(("c", "INT32", [2], np.array([3, 4], "<i4").tobytes()))
    body, length = infer_response_body(message, InferCall(pb.ModelInferRequest()))
    assert length is None and orjson.loads(body)["outputs"][0]["data"] == [3, 4]


def test_message_json_writes_numbers_enums_and_defaults_as_triton():
    config = config_pb.ModelConfig(
        name="m", max_batch_size=8,
        input=[config_pb.ModelInput(name="x", data_type=config_pb.TYPE_UINT8, dims=[28, 28])],
        dynamic_batching=config_pb.ModelDynamicBatching(max_queue_delay_microseconds=2**40),
        parameters={"p": config_pb.ModelParameter(string_value="v")},
    )
    document = message_json(config)
    assert document["input"][0]["dims"] == [28, 28] and document["input"][0]["data_type"] == "TYPE_UINT8"
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 2**40
    assert document["parameters"] == {"p": {"string_value": "v"}}
    assert document["platform"] == "" and "sequence_batching" not in document  # unset messages left out
    statistics = pb.ModelStatisticsResponse()
    statistics.model_stats.add(name="m", version="1")
    entry = message_json(statistics, fill=True)["model_stats"][0]
    assert entry["inference_stats"]["queue"] == {"count": 0, "ns": 0} and entry["inference_count"] == 0
    parameter = pb.InferParameter(int64_param=-5)
    assert message_json(parameter) == {"int64_param": -5}  # only the oneof's set member
