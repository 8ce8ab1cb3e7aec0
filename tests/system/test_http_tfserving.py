"""TensorFlow Serving's REST API on the HTTP/REST port, called over real HTTP as its documentation shows, and
compared with the gRPC PredictionService of the same server (the session ``server``: ``fashion``, uint8
[N, 28, 28] pixels with labels, and ``digits``, float [N, 784] with no labels)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_LABELS, ServerProcess, metric_value
from google.protobuf import json_format
from PIL import Image
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

AVAILABLE = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                       "status": {"error_code": "OK", "error_message": ""}}]}


def http(url: str, body: bytes | dict | list | None = None, method: str | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of one HTTP request; a dict or list body is sent as JSON."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(server) -> str:
    return f"{server.http_url}/v1/models"


def grpc_predict(stub, model: str, array: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(array))
    return {name: tf.make_ndarray(t) for name, t in stub.Predict(request, timeout=30).outputs.items()}


def digits_signature(stub) -> tuple[str, str]:
    response = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "digits"}, metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    return next(iter(signature.inputs)), next(iter(signature.outputs))


def test_model_status_is_tensorflow_servings_json_on_every_path(models):
    for path in ("fashion", "fashion/versions/1", "digits"):
        assert http(f"{models}/{path}") == (200, AVAILABLE)
    assert http(f"{models}/fashion/versions/7")[0] == 404
    assert http(f"{models}/nope")[0] == 404
    status, answer = http(f"{models}/fashion/labels/stable")
    assert (status, answer["error"]) == (400, "Unrecognized servable version label: stable")


LABELLED = """
models {{ name: "fashion" base_path: "{base}" version_labels {{ key: "stable" value: 1 }} }}
"""


def test_label_paths_name_the_labelled_version(model_repo, tmp_path, fashion_test):
    config = tmp_path / "models.pbtxt"
    config.write_text(LABELLED.format(base=model_repo / "fashion"))
    proc = ServerProcess(model_repo, tmp_path, "--model-config", str(config))
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
        base = f"{proc.http_url}/v1/models/fashion/labels/stable"
        assert http(base) == (200, AVAILABLE)
        status, metadata = http(f"{base}/metadata")
        assert status == 200 and metadata["model_spec"]["version"] == "1"
        image = fashion_test.images[:1]
        status, predicted = http(f"{base}:predict", {"instances": image.tolist()})
        assert status == 200 and predicted["predictions"][0]["classes"] in range(10)
        status, classified = http(f"{base}:classify", {"examples": [{"image": {"b64": png_b64(image[0])}}]})
        assert status == 200 and [label for label, _ in classified["results"][0]] == FASHION_LABELS
        assert http(f"{proc.http_url}/v1/models/fashion/labels/canary")[0] == 400
    finally:
        assert proc.stop() == 0, proc.log()


def test_metadata_is_the_signature_def_map_as_tensorflow_serving_prints_it(models, stub):
    status, answer = http(f"{models}/fashion/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "fashion", "signature_name": "", "version": "1"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"

    grpc_answer = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "fashion"}, metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    grpc_answer.metadata["signature_def"].Unpack(signatures)
    assert answer["metadata"]["signature_def"] == json_format.MessageToDict(
        signatures, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    assert http(f"{models}/fashion/versions/1/metadata") == (200, answer)


def test_row_format_answers_one_object_per_instance_as_grpc_does(models, stub, fashion_test):
    images = fashion_test.images[:8]
    status, answer = http(f"{models}/fashion:predict", {"instances": images.tolist()})
    expected = grpc_predict(stub, "fashion", images, "images")
    assert status == 200 and len(answer["predictions"]) == 8
    assert [sorted(p) for p in answer["predictions"]] == [["classes", "probabilities"]] * 8
    assert [p["classes"] for p in answer["predictions"]] == expected["classes"].tolist()
    probabilities = np.array([p["probabilities"] for p in answer["predictions"]], np.float32)
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-6)

    # Named instances, a version path and the signature name: the same answer.
    status, named = http(f"{models}/fashion/versions/1:predict",
                         {"signature_name": "serving_default", "instances": [{"images": i} for i in images.tolist()]})
    assert status == 200 and [p["classes"] for p in named["predictions"]] == expected["classes"].tolist()


def test_columnar_format_answers_outputs_bare_for_one_output_keyed_for_several(models, stub, fashion_test,
                                                                               mnist_test):
    images = fashion_test.images[8:12]
    status, answer = http(f"{models}/fashion:predict", {"inputs": images.tolist()})
    expected = grpc_predict(stub, "fashion", images, "images")
    assert status == 200 and sorted(answer["outputs"]) == ["classes", "probabilities"]
    assert answer["outputs"]["classes"] == expected["classes"].tolist()
    np.testing.assert_allclose(np.array(answer["outputs"]["probabilities"], np.float32), expected["probabilities"],
                               atol=1e-6)

    input_name, _ = digits_signature(stub)
    pixels = mnist_test.images[5000:5004].reshape(-1, 784).astype(np.float32) / 255
    status, answer = http(f"{models}/digits:predict", {"inputs": {input_name: pixels.tolist()}})
    (logits,) = grpc_predict(stub, "digits", pixels, input_name).values()
    assert status == 200 and isinstance(answer["outputs"], list)  # one output: its bare values
    np.testing.assert_allclose(np.array(answer["outputs"], np.float32), logits, atol=1e-5)
    status, rows = http(f"{models}/digits:predict", {"instances": pixels.tolist()})
    assert status == 200 and np.array(rows["predictions"]).shape == (4, 10)


def test_b64_png_files_are_decoded_for_a_pixel_model(models, stub, fashion_test):
    images = fashion_test.images[20:23]
    status, answer = http(f"{models}/fashion:predict", {"instances": [{"b64": png_b64(i)} for i in images]})
    expected = grpc_predict(stub, "fashion", images, "images")  # PNG is lossless: the same pixels
    assert status == 200
    assert [p["classes"] for p in answer["predictions"]] == expected["classes"].tolist()
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], expected["probabilities"],
                               atol=1e-6)
    status, columnar = http(f"{models}/fashion:predict", {"inputs": {"images": [{"b64": png_b64(images[0])}]}})
    assert status == 200 and columnar["outputs"]["classes"] == expected["classes"][:1].tolist()


def test_classify_reads_tensorflow_servings_example_json_as_grpc_classify(models, stub, fashion_test):
    image = fashion_test.images[7]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "fashion"
    request.input.example_list.examples.add().features.feature["image"].int64_list.value.extend(image.ravel().tolist())
    expected = [(c.label, c.score) for c in stub.Classify(request, timeout=30).result.classifications[0].classes]

    body = {"signature_name": "serving_default",
            "examples": [{"image": image.ravel().tolist()}, {"image/encoded": {"b64": png_b64(image)}},
                         {"image": image.ravel().astype(float).tolist(), "id": "a", "weight": 0.5}]}
    status, answer = http(f"{models}/fashion:classify", body)
    assert status == 200 and len(answer["results"]) == 3
    for result in answer["results"]:
        assert [label for label, _ in result] == FASHION_LABELS
        np.testing.assert_allclose([score for _, score in result], [s for _, s in expected], atol=1e-6)

    status, with_context = http(f"{models}/fashion/versions/1:classify",
                                {"context": {"image": {"b64": png_b64(image)}}, "examples": [{"id": 1}]})
    assert status == 200
    np.testing.assert_allclose([s for _, s in with_context["results"][0]], [s for _, s in expected], atol=1e-6)


def test_curl_as_in_tensorflow_servings_readme(server, stub, mnist_test):
    """``curl -d '{"instances": ...}' -X POST .../v1/models/NAME:predict``: a form content type, not JSON's."""
    pixels = mnist_test.images[5010:5011].reshape(-1, 784).astype(np.float32) / 255
    result = subprocess.run(
        ["curl", "-sS", "-d", json.dumps({"instances": pixels.tolist()}), "-X", "POST",
         f"{server.http_url}/v1/models/digits:predict"], capture_output=True, timeout=60, check=True)
    input_name, _ = digits_signature(stub)
    (logits,) = grpc_predict(stub, "digits", pixels, input_name).values()
    np.testing.assert_allclose(np.array(json.loads(result.stdout)["predictions"], np.float32), logits, atol=1e-5)


ZEROS = np.zeros((1, 28, 28), np.uint8).tolist()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("GET", "", None, 400, "Missing model name in request."),
        ("GET", "/fashion/versions/1/labels/x", None, 400, "Malformed request: GET /v1/models/fashion/versions"),
        ("PUT", "/fashion", b"{}", 400, "Malformed request: PUT /v1/models/fashion"),
        ("DELETE", "/fashion/versions/1", None, 400, "Malformed request: DELETE"),
        ("POST", "/fashion:explain", {"instances": ZEROS}, 400, "Malformed request: POST /v1/models/fashion:explain"),
        ("POST", "/fashion", {"instances": ZEROS}, 400, "Malformed request: POST"),
        ("GET", "/fashion:predict", None, 400, "Malformed request: GET"),
        ("GET", "/fashion/versions/99999999999999999999", None, 400, "Failed to convert version"),
        ("POST", "/fashion:predict", [1, 2], 400, "JSON object"),
        ("POST", "/fashion:predict", b"{nope", 400, "not valid JSON"),
        ("POST", "/fashion:predict", {"instances": ZEROS, "inputs": ZEROS}, 400,
         "expecting only one of 'inputs' or 'instances' keys"),
        ("POST", "/fashion:predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", "/fashion:predict", {"instances": {"images": ZEROS}}, 400, "'instances' to be an list/array"),
        ("POST", "/fashion:predict", {"instances": []}, 400, "No values in 'instances' array"),
        ("POST", "/fashion:predict", {"instances": [[[0] * 28] * 28, [[0] * 28] * 27]}, 400,
         "Failed to process element: 1 of 'instances' list. Error: Expecting shape [28,28] but got: [27,28]"),
        ("POST", "/fashion:predict", {"inputs": [[[0] * 28] * 27 + [[0] * 27]]}, 400,
         "Encountered list at unexpected size: 27 at level: 2 expected size: 28"),
        ("POST", "/fashion:predict", {"instances": [[["x"] * 28] * 28]}, 400,
         'JSON Value: "x" Type: String is not of expected type: uint8'),
        ("POST", "/fashion:predict", {"instances": [[[0.5] * 28] * 28]}, 400, "is not of expected type: uint8"),
        ("POST", "/fashion:predict", {"instances": [[[300] * 28] * 28]}, 400, "300 is out of range for uint8"),
        ("POST", "/fashion:predict", {"instances": [{"b64": "***"}]}, 400, "Unable to base64 decode"),
        ("POST", "/fashion:predict", {"instances": [{"b64": "AAAA", "x": 1}]}, 400,
         "Failed to process element: 0 key: b64 of 'instances' list. Error: JSON object: does not have named input"),
        ("POST", "/fashion:predict", {"instances": [ZEROS[0], {"images": ZEROS[0]}]}, 400,
         "Expecting value/list but got object at item 1 of input list"),
        ("POST", "/fashion:predict", {"instances": [{"pixels": ZEROS[0]}]}, 400,
         "does not have named input: pixels"),
        ("POST", "/fashion:predict", {"inputs": {"pixels": ZEROS}}, 400, "Missing named input: images"),
        ("POST", "/fashion:predict", {"instances": [[[0] * 28] * 27]}, 400, "[-1, 28, 28]"),
        ("POST", "/fashion:predict", {"signature_name": 5, "instances": ZEROS}, 400,
         "'signature_name' key must be a string value."),
        ("POST", "/fashion:predict", {"signature_name": "other", "instances": ZEROS}, 400,
         'Serving signature key "other" not found'),
        ("POST", "/nope:predict", {"instances": ZEROS}, 404, "'nope' not found"),
        ("POST", "/fashion/versions/9:predict", {"instances": ZEROS}, 404, "no version 9"),
        ("POST", "/fashion/labels/stable:predict", {"instances": ZEROS}, 400, "stable"),
        ("POST", "/fashion:classify", {"instances": ZEROS}, 400, "'examples' is expected and was not found"),
        ("POST", "/fashion:classify", {"examples": [[1, 2]]}, 400, "Example must be JSON object but got JSON Array"),
        ("POST", "/fashion:classify", {"examples": [{"image": [1, 0.5]}]}, 400,
         "Unexpected element type in feature: image expecting type: int64"),
        ("POST", "/fashion:classify", {"examples": [{"image": [1] * 100}]}, 400, "holds 100 values"),
        ("POST", "/fashion:regress", {"examples": [{"image": [0] * 784}]}, 501, "Regress is not supported"),
        ("POST", "/fashion:regress", {"examples": 3}, 400, "Expecting 'examples' value to be an list/array"),
    ],
)
def test_errors_are_json_with_tensorflow_servings_statuses(models, method, path, body, status, fragment):
    answer_status, answer = http(f"{models}{path}", body, method)
    assert (answer_status, fragment in answer["error"]) == (status, True), answer
    assert answer["code"]


def test_requests_count_under_the_http_label_refusals_under_their_method(server, models):
    def count(method: str, code: str) -> float:
        return metric_value(server.metrics_text(), "tfclassify_requests_total", api="tensorflow_serving_http",
                            method=method, code=code)

    before = count("Predict", "OK"), count("Classify", "INVALID_ARGUMENT"), count("GetModelStatus", "OK")
    assert http(f"{models}/fashion:predict", {"instances": ZEROS})[0] == 200
    assert http(f"{models}/fashion:classify", {"examples": []})[0] == 400
    assert http(f"{models}/fashion")[0] == 200
    after = count("Predict", "OK"), count("Classify", "INVALID_ARGUMENT"), count("GetModelStatus", "OK")
    assert [b - a for a, b in zip(before, after)] == [1, 1, 1]
