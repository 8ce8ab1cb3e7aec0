"""TensorFlow Serving's REST JSON as protobuf messages and back (``server/rest/tfserving_json.py``)."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, get_model_status_pb2

from tfclassify.server.rest import tfserving_json as tj

UINT8, FLOAT, INT64 = types_pb2.DT_UINT8, types_pb2.DT_FLOAT, types_pb2.DT_INT64
NUMERIC = {types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64,
           types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64}


def through_json(value):
    """``value`` as a client sends it and the server parses it."""
    return orjson.loads(json.dumps(value))


def dumped(answer: dict) -> dict:
    return orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))


@st.composite
def arrays(draw):
    enum = draw(st.sampled_from(sorted(NUMERIC)))
    dtype = np.dtype(NUMERIC[enum])
    elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False) if dtype.kind == "f" else None
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    return enum, draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(arrays())
def test_numbers_of_any_numeric_dtype_arrive_exactly(case):
    enum, array = case
    tensor = tj.json_tensor(through_json(array.tolist()), enum)
    assert tensor.dtype == enum
    np.testing.assert_array_equal(tj.array_of(tensor), array)
    assert tj.array_of(tensor).dtype == array.dtype


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4),
                  elements=hnp.from_dtype(np.dtype(np.float32), allow_nan=False, allow_infinity=False)))
def test_float32_outputs_are_written_as_decimals_that_read_back_exactly(array):
    outputs = {"scores": tj.tensor_proto(array)}
    row = dumped(tj.predict_json(outputs, tj.ROW))["predictions"]
    columnar = dumped(tj.predict_json(outputs, tj.COLUMNAR))["outputs"]
    np.testing.assert_array_equal(np.array(row, np.float32), array)
    np.testing.assert_array_equal(np.array(columnar, np.float32), array)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.integers(0, 255), lambda inner: st.lists(inner, min_size=1, max_size=3), max_leaves=12))
def test_any_nesting_is_a_tensor_or_a_400_never_a_crash(value):
    try:
        tensor = tj.json_tensor(value, UINT8)
    except tj.JsonRequestError as exc:
        assert str(exc)
    else:
        assert np.asarray(value).tolist() == tj.array_of(tensor).tolist()


def test_row_format_batches_instances_plain_or_named():
    fmt, tensors = tj.predict_inputs({"instances": [[1, 2], [3, 4]]}, {"x": UINT8})
    assert fmt == tj.ROW and tj.array_of(tensors["x"]).tolist() == [[1, 2], [3, 4]]
    _, named = tj.predict_inputs({"instances": [{"x": [1.5], "y": 7}, {"x": [2.5], "y": 8}]}, {"x": FLOAT, "y": INT64})
    assert tj.array_of(named["x"]).tolist() == [[1.5], [2.5]] and tj.array_of(named["y"]).tolist() == [7, 8]
    fmt, columnar = tj.predict_inputs({"inputs": {"x": [[1, 2]], "extra": 1}}, {"x": UINT8})
    assert fmt == tj.COLUMNAR and list(columnar) == ["x"]


def test_empty_lists_are_empty_tensors_of_the_signature_dtype():
    _, tensors = tj.predict_inputs({"inputs": [[], []]}, {"x": UINT8})
    array = tj.array_of(tensors["x"])
    assert array.shape == (2, 0) and array.dtype == np.uint8


def test_b64_values_become_a_string_batch_padding_and_url_safe_alphabet_optional():
    data = [b"\x89PNG\r\n\x1a\n-one", b"\xff\xd8\xff-two?>"]
    encoded = [{"b64": base64.b64encode(data[0]).decode().rstrip("=")},
               {"b64": base64.urlsafe_b64encode(data[1]).decode()}]
    _, tensors = tj.predict_inputs({"instances": encoded}, {"images": UINT8})
    assert tensors["images"].dtype == types_pb2.DT_STRING
    assert list(tensors["images"].string_val) == data
    assert [d.size for d in tensors["images"].tensor_shape.dim] == [2]


@pytest.mark.parametrize(
    ("body", "inputs", "message"),
    [
        ({"instances": [[1, 2], [3]]}, {"x": UINT8},
         "Failed to process element: 1 of 'instances' list. Error: Expecting shape [2] but got: [1]"),
        ({"instances": [[1, 2], [3, "a"]]}, {"x": UINT8},
         "Failed to process element: 1 of 'instances' list. Error: JSON Value: \"a\" Type: String is not of "
         "expected type: uint8"),
        ({"instances": [[True, False]]}, {"x": FLOAT}, "JSON Value: true Type: True is not of expected type: float"),
        ({"inputs": [[1, None]]}, {"x": FLOAT}, "JSON Value: null Type: Null is not of expected type: float"),
        ({"inputs": [1.5]}, {"x": INT64}, "JSON Value: 1.5 Type: Number is not of expected type: int64"),
        ({"inputs": [2**64 - 1]}, {"x": INT64}, "18446744073709551615 is out of range for int64"),
        ({"inputs": [2**70]}, {"x": INT64}, "Type: Number is not of expected type: int64"),  # orjson: a float
        ({"inputs": [-1]}, {"x": UINT8}, "JSON Value: -1 is out of range for uint8"),
        ({"inputs": [16777217]}, {"x": FLOAT}, "Cannot convert JSON value: 16777217 to float without loss of precision."),
        ({"inputs": [1e300]}, {"x": FLOAT}, "to float without loss of precision."),
        ({"inputs": [[1], [2, 3]]}, {"x": UINT8}, "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
        ({"inputs": [[1], 2]}, {"x": UINT8}, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at "
                                            "level: 2"),
        ({"inputs": [{"b64": "@@@"}]}, {"x": UINT8}, "Unable to base64 decode"),
        ({"inputs": [{"b64": 1}]}, {"x": types_pb2.DT_STRING}, "not formatted correctly for base64 data"),
        ({"instances": [1], "inputs": [1]}, {"x": UINT8}, "expecting only one of 'inputs' or 'instances' keys"),
        ({}, {"x": UINT8}, "Missing 'inputs' or 'instances' key"),
        ({"instances": [1]}, {"x": UINT8, "y": UINT8}, "instances is a plain list, but expecting list of objects"),
        ({"inputs": [1]}, {"x": UINT8, "y": UINT8}, "inputs is a plain value/list, but expecting an object"),
        ({"instances": [{"x": 1}, 2]}, {"x": UINT8}, "Expecting object but got list at item 1 of input list"),
        ({"instances": [{"x": 1}, {"x": 1, "y": 2}]}, {"x": UINT8}, "Failed to process element: 1 key: y"),
        ({"instances": [{"x": 1}, {}]}, {"x": UINT8}, "must only have keys: x"),
    ],
)
def test_malformed_predict_bodies_have_tensorflow_servings_messages(body, inputs, message):
    with pytest.raises(tj.JsonRequestError) as error:
        tj.predict_inputs(through_json(body), inputs)
    assert message in str(error.value)


def test_signature_name_must_be_a_string():
    assert tj.signature_name({}) == "" and tj.signature_name({"signature_name": "s"}) == "s"
    with pytest.raises(tj.JsonRequestError, match="'signature_name' key must be a string value"):
        tj.signature_name({"signature_name": ["s"]})


def test_outputs_are_bare_for_one_keyed_by_name_for_several_bytes_as_b64():
    outputs = {"classes": tj.tensor_proto(np.array([3, 1], np.int64)),
               "scores": tj.tensor_proto(np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)),
               "names_bytes": tj.string_proto([b"\x00a", b"b"], [2]), "names": tj.string_proto([b"x", b"y"], [2])}
    assert dumped(tj.predict_json({"classes": outputs["classes"]}, tj.ROW)) == {"predictions": [3, 1]}
    row = dumped(tj.predict_json(outputs, tj.ROW))["predictions"]
    assert row[0] == {"classes": 3, "scores": [0.25, 0.75], "names_bytes": {"b64": "AGE="}, "names": "x"}
    columnar = dumped(tj.predict_json(outputs, tj.COLUMNAR))["outputs"]
    assert columnar["scores"] == [[0.25, 0.75], [0.5, 0.5]] and columnar["names"] == ["x", "y"]
    with pytest.raises(tj.JsonRequestError, match="has no shape information"):
        tj.predict_json({"a": tj.tensor_proto(np.float32(1.0).reshape(()))}, tj.ROW)


def test_examples_become_tf_examples_with_a_shared_context():
    png = b"\x89PNG\r\n\x1a\nrest"
    body = {"context": {"image": {"b64": base64.b64encode(png).decode()}, "flag": True},
            "examples": [{"pixels": [1, 2, 3], "weight": 0.5, "tags": ["a", "b"]}, {}]}
    request = tj.examples_input(through_json(body))
    lists = request.example_list_with_context
    assert lists.context.features.feature["image"].bytes_list.value == [png]
    assert lists.context.features.feature["flag"].int64_list.value == [1]
    first = lists.examples[0].features.feature
    assert first["pixels"].int64_list.value == [1, 2, 3]
    assert first["weight"].float_list.value == [0.5]
    assert first["tags"].bytes_list.value == [b"a", b"b"]
    assert len(lists.examples) == 2
    plain = tj.examples_input({"examples": [{"image": [0] * 784}]})
    assert plain.WhichOneof("kind") == "example_list" and len(plain.example_list.examples[0].features.feature[
        "image"].int64_list.value) == 784


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"examples": 1}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({}, "When method is classify, key 'examples' is expected and was not found"),
        ({"examples": ["x"]}, "Example must be JSON object but got JSON String"),
        ({"context": [], "examples": [{}]}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"f": [0.5, 1]}]}, "Unexpected element type in feature: f expecting type: float"),
        ({"examples": [{"f": [1, "a"]}]}, "Unexpected element type in feature: f expecting type: int64"),
        ({"examples": [{"f": [[1]]}]}, "Feature: f has element with unexpected JSON type: Array"),
        ({"examples": [{"f": None}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": 2**63}]}, "Feature: f has uint64 element. Only int64 is supported."),
        ({"examples": [{"f": 1e300}]}, "Cannot convert JSON value"),
    ],
)
def test_malformed_examples_have_tensorflow_servings_messages(body, message):
    with pytest.raises(tj.JsonRequestError) as error:
        tj.examples_input(through_json(body))
    assert message in str(error.value)


def test_classification_results_are_label_score_pairs_with_float32_decimals():
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.extend([classification_pb2.Class(label="cat", score=0.1),
                                                 classification_pb2.Class(label="dog", score=0.9)])
    assert orjson.dumps(tj.classify_json(result), option=orjson.OPT_SERIALIZE_NUMPY) == \
        b'{"results":[[["cat",0.1],["dog",0.9]]]}'


def test_status_and_metadata_are_printed_as_tensorflow_serving_prints_them():
    status = get_model_status_pb2.GetModelStatusResponse()
    status.model_version_status.add(version=3, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    assert tj.status_json(status) == {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}

    metadata = get_model_metadata_pb2.GetModelMetadataResponse()
    metadata.model_spec.name = "m"
    metadata.model_spec.version.value = 3
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    signatures.signature_def["serving_default"].inputs["x"].dtype = UINT8
    metadata.metadata["signature_def"].Pack(signatures)
    answer = tj.metadata_json(metadata)
    assert answer["model_spec"] == {"name": "m", "signature_name": "", "version": "3"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict" and signature["inputs"]["x"]["dtype"] == "DT_UINT8"
