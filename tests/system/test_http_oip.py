"""The Open Inference Protocol's HTTP/REST binding, called with Triton's real HTTP client (``tritonclient.http``)
against the session's server process, and with plain HTTP for what the client never sends.

tritonclient runs in a process of its own (its protobuf package clashes with ours in one process, as
tests/system/test_oip_api.py explains); the script below makes the calls over HTTP and, for the same images,
over gRPC, and prints what it got as JSON.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import FASHION_LABELS, http_get, metric_value
from PIL import Image

HEADER_LENGTH = "Inference-Header-Content-Length"

TRITON_SCRIPT = r'''
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

http_url, grpc_address, data_path = sys.argv[1:4]
data = np.load(data_path, allow_pickle=True)
fashion, digits, pngs = data["fashion"], data["digits"], list(data["pngs"])
http = httpclient.InferenceServerClient(http_url)
grpc = grpcclient.InferenceServerClient(grpc_address)
out = {}


def tensor(module, name, array, datatype, binary=True):
    t = module.InferInput(name, list(array.shape), datatype)
    if module is httpclient:
        t.set_data_from_numpy(array, binary_data=binary)
    else:
        t.set_data_from_numpy(array)
    return t


def rows(array):
    """JSON of an output: numbers as lists, BYTES (str from JSON data, numpy.bytes_ or bytes) as strings."""
    if array.dtype == object or array.dtype.kind == "S":
        return [[s if isinstance(s, str) else bytes(s).decode() for s in row] for row in array.reshape(len(array), -1)]
    return array.tolist()


def error(call):
    try:
        call()
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]
    return None


out["health"] = {
    "live": http.is_server_live(), "ready": http.is_server_ready(),
    "fashion": http.is_model_ready("fashion"), "fashion_v1": http.is_model_ready("fashion", "1"),
    "fashion_v7": http.is_model_ready("fashion", "7"), "nope": http.is_model_ready("nope"),
}
out["server_metadata"] = http.get_server_metadata()
out["fashion_metadata"] = http.get_model_metadata("fashion")
out["fashion_metadata_v1"] = http.get_model_metadata("fashion", "1")
out["grpc_fashion_metadata"] = grpc.get_model_metadata("fashion", as_json=True)
out["fashion_config"] = http.get_model_config("fashion")
out["grpc_fashion_config"] = grpc.get_model_config("fashion", as_json=True)["config"]
out["statistics_before"] = http.get_inference_statistics("fashion")

images = tensor(httpclient, "images", fashion, "UINT8")
result = http.infer("fashion", [images])  # no outputs named: every output, binary (binary_data_output)
out["binary"] = {"version": result.get_response()["model_version"],
                 "outputs": [o["name"] for o in result.get_response()["outputs"]],
                 "probabilities": rows(result.as_numpy("probabilities")), "classes": rows(result.as_numpy("classes"))}
grpc_result = grpc.infer("fashion", [tensor(grpcclient, "images", fashion, "UINT8")])
out["grpc"] = {"probabilities": rows(grpc_result.as_numpy("probabilities")),
               "classes": rows(grpc_result.as_numpy("classes"))}
json_result = http.infer("fashion", [tensor(httpclient, "images", fashion[:20], "UINT8", binary=False)],
                         outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False),
                                  httpclient.InferRequestedOutput("classes", binary_data=False)],
                         request_id="json-1")
out["json"] = {"id": json_result.get_response()["id"],
               "has_data": ["data" in o for o in json_result.get_response()["outputs"]],
               "probabilities": rows(json_result.as_numpy("probabilities")),
               "classes": rows(json_result.as_numpy("classes"))}
out["version_1"] = rows(http.infer("fashion", [tensor(httpclient, "images", fashion[:3], "UINT8")],
                                   model_version="1").as_numpy("probabilities"))
for binary in (True, False):
    top3 = http.infer("fashion", [tensor(httpclient, "images", fashion[:5], "UINT8")],
                      outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)])
    out[f"classification_{binary}"] = rows(top3.as_numpy("probabilities"))
grpc_top3 = grpc.infer("fashion", [tensor(grpcclient, "images", fashion[:5], "UINT8")],
                       outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
out["grpc_classification"] = rows(grpc_top3.as_numpy("probabilities"))

files = np.array(pngs, dtype=object)
out["png"] = rows(http.infer("fashion", [tensor(httpclient, "images", files, "BYTES")]).as_numpy("probabilities"))
out["grpc_png"] = rows(grpc.infer("fashion", [tensor(grpcclient, "images", files, "BYTES")]).as_numpy("probabilities"))

scaled = (digits.reshape(-1, 784) / 255).astype(np.float32)
digits_input = out["digits_input"] = http.get_model_metadata("digits")["inputs"][0]["name"]
digits_output = http.get_model_metadata("digits")["outputs"][0]["name"]
for binary in (True, False):
    answer = http.infer("digits", [tensor(httpclient, digits_input, scaled, "FP32", binary=binary)],
                        outputs=[httpclient.InferRequestedOutput(digits_output, binary_data=binary)])
    out[f"digits_{binary}"] = rows(answer.as_numpy(digits_output))
out["grpc_digits"] = rows(grpc.infer("digits", [tensor(grpcclient, digits_input, scaled, "FP32")])
                          .as_numpy(digits_output))
compressed = http.infer("fashion", [tensor(httpclient, "images", fashion[:4], "UINT8")],
                        request_compression_algorithm="gzip", response_compression_algorithm="gzip")
out["gzip"] = rows(compressed.as_numpy("probabilities"))
deflated = http.infer("fashion", [tensor(httpclient, "images", fashion[:4], "UINT8")],
                      request_compression_algorithm="deflate", response_compression_algorithm="deflate")
out["deflate"] = rows(deflated.as_numpy("probabilities"))
out["errors"] = {
    "unknown_model": error(lambda: http.infer("nope", [tensor(httpclient, "images", fashion[:1], "UINT8")])),
    "unknown_version": error(lambda: http.infer("fashion", [tensor(httpclient, "images", fashion[:1], "UINT8")],
                                                model_version="7")),
    "wrong_datatype": error(lambda: http.infer(
        "fashion", [tensor(httpclient, "images", fashion[:1].astype(np.float32), "FP32")])),
    "unknown_model_metadata": error(lambda: http.get_model_metadata("nope")),
}
out["statistics_after"] = http.get_inference_statistics("fashion")
out["all_statistics"] = [s["name"] for s in http.get_inference_statistics()["model_stats"]]
http.close()
grpc.close()
print(json.dumps(out))
'''


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory, fashion_test, mnist_test):
    path = tmp_path_factory.mktemp("http_oip") / "data.npz"
    pngs = np.array([png(image) for image in fashion_test.images[:6]], dtype=object)
    np.savez(path, fashion=fashion_test.images[:200], digits=mnist_test.images[5000:5030], pngs=pngs)
    return {"path": path, "fashion": fashion_test.images[:200]}


@pytest.fixture(scope="module")
def triton(server, data):
    """What tritonclient.http (and tritonclient.grpc, for the same images) got from the server."""
    result = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, f"127.0.0.1:{server.http_port}", server.address,
                             str(data["path"])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def expected(server, data):
    with server.client() as client:
        return client.classify(data["fashion"], "fashion", return_probabilities=True)


def post(server, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a POST to the server's HTTP port; error statuses are returned, not raised."""
    request = urllib.request.Request(f"{server.http_url}{path}", data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def infer_json(server, document: dict, model: str = "fashion") -> tuple[int, dict]:
    status, _, body = post(server, f"/v2/models/{model}/infer", json.dumps(document).encode(),
                           {"Content-Type": "application/json"})
    return status, json.loads(body)


def one_image_document(image: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                        "data": image.ravel().tolist()}], **extra}


# -- tritonclient.http ------------------------------------------------------------------------------------------
def test_health_and_server_metadata(triton):
    assert triton["health"] == {
        "live": True, "ready": True, "fashion": True, "fashion_v1": True, "fashion_v7": False, "nope": False
    }
    metadata = triton["server_metadata"]
    assert metadata["name"] == "tfclassify"
    assert {"classification", "model_configuration", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_config_are_the_grpc_ones_with_numbers(triton):
    metadata = triton["fashion_metadata"]
    assert metadata == triton["fashion_metadata_v1"]
    assert metadata == {
        "name": "fashion", "versions": ["1"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                    {"name": "classes", "datatype": "INT32", "shape": [-1]}],
    }
    config = triton["fashion_config"]
    assert config["name"] == "fashion" and config["platform"] == "tensorflow_savedmodel"
    assert config["max_batch_size"] == 4096
    assert config["input"][0]["dims"] == [28, 28] and config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert config["dynamic_batching"]["preferred_batch_size"] == [4096]
    assert config["instance_group"][0]["kind"] == "KIND_CPU" and config["instance_group"][0]["count"] == 1
    # The gRPC answer in protobuf's JSON mapping (64-bit numbers as strings, defaults left out) says the same.
    grpc_config = triton["grpc_fashion_config"]
    assert grpc_config["input"][0]["dims"] == ["28", "28"]
    assert grpc_config["dynamic_batching"]["max_queue_delay_microseconds"] == str(
        config["dynamic_batching"]["max_queue_delay_microseconds"])


def test_binary_infer_equals_grpc_and_the_classifier_api(triton, expected):
    binary = triton["binary"]
    assert binary["version"] == "1" and binary["outputs"] == ["probabilities", "classes"]
    assert binary["probabilities"] == triton["grpc"]["probabilities"]
    assert binary["classes"] == triton["grpc"]["classes"] == expected.classes.tolist()
    np.testing.assert_allclose(binary["probabilities"], expected.probabilities, atol=1e-6)
    # Other batch sizes may change a float32's last bit.
    np.testing.assert_allclose(triton["version_1"], binary["probabilities"][:3], atol=1e-6)


def test_json_inputs_and_outputs_give_the_same_numbers(triton):
    answer = triton["json"]
    assert answer["id"] == "json-1" and answer["has_data"] == [True, True]
    np.testing.assert_allclose(answer["probabilities"], triton["binary"]["probabilities"][:20], atol=1e-6)
    assert answer["classes"] == triton["binary"]["classes"][:20]


def test_classification_extension_binary_and_json(triton, expected):
    assert triton["classification_True"] == triton["classification_False"] == triton["grpc_classification"]
    for i, row in enumerate(triton["classification_True"]):
        order = np.argsort(-expected.probabilities[i], kind="stable")[:3]
        assert [entry.split(":", 1)[1] for entry in row] == [f"{c}:{FASHION_LABELS[c]}" for c in order]


def test_png_files_as_bytes_inputs(triton, expected):
    assert triton["png"] == triton["grpc_png"]
    np.testing.assert_allclose(triton["png"], expected.probabilities[:6], atol=1e-6)


def test_float_model_binary_and_json_equal_grpc(triton):
    assert triton["digits_True"] == triton["grpc_digits"]
    np.testing.assert_allclose(triton["digits_False"], triton["grpc_digits"], rtol=1e-6, atol=1e-6)
    assert np.asarray(triton["digits_False"]).shape == (30, 10)


def test_compressed_requests_and_responses(triton):
    assert triton["gzip"] == triton["deflate"]
    np.testing.assert_allclose(triton["gzip"], triton["binary"]["probabilities"][:4], atol=1e-6)


def test_errors_raise_with_our_messages(triton):
    errors = triton["errors"]
    assert errors["unknown_model"][0] == "404" and "'nope'" in errors["unknown_model"][1]
    assert errors["unknown_version"][0] == "404"
    assert errors["wrong_datatype"] == [
        "400", "unexpected datatype FP32 for inference input 'images', expecting UINT8 or BYTES"
    ]
    assert errors["unknown_model_metadata"][0] == "404"


def test_statistics_count_the_http_requests(triton):
    (before,), (after,) = triton["statistics_before"]["model_stats"], triton["statistics_after"]["model_stats"]
    assert after["name"] == "fashion" and after["version"] == "1"
    for section in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(after["inference_stats"][section]) == {"count", "ns"}, section
    success = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    # Between the two reads, over HTTP and gRPC: all outputs (2), JSON (1), version 1 (1), classification (3),
    # PNG files (2) and compressed (2) fashion requests succeeded.
    assert success == 11
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1  # datatype
    assert isinstance(after["inference_count"], int) and after["execution_count"] > 0
    assert set(triton["all_statistics"]) >= {"fashion", "digits"}


def test_requests_are_counted_under_the_http_label(server, triton):
    text = server.metrics_text()
    assert metric_value(text, "tfclassify_requests_total", api="open_inference_http", method="ModelInfer",
                        model="fashion", version="1", code="OK") >= 8
    assert metric_value(text, "tfclassify_requests_total", api="open_inference_http", method="ModelInfer",
                        code="INVALID_ARGUMENT") >= 1


# -- plain HTTP -------------------------------------------------------------------------------------------------
def test_json_only_infer_without_tritonclient(server, expected, data):
    status, answer = infer_json(server, one_image_document(data["fashion"][0], id="plain",
                                                           outputs=[{"name": "probabilities"}]))
    assert status == 200
    assert answer["model_name"] == "fashion" and answer["model_version"] == "1" and answer["id"] == "plain"
    [output] = answer["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [1, 10]
    np.testing.assert_allclose(output["data"], expected.probabilities[0], atol=1e-6)
    # Nested data, as KServe's examples send it, and the classification parameter as JSON.
    nested = {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                          "data": data["fashion"][:1].tolist()}],
              "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    status, answer = infer_json(server, nested)
    assert status == 200
    best = int(np.argmax(expected.probabilities[0]))
    assert answer["outputs"][0]["datatype"] == "BYTES"
    assert answer["outputs"][0]["data"][0].endswith(f":{best}:{FASHION_LABELS[best]}")


def test_binary_request_answered_in_binary_with_the_header_length(server, expected, data):
    header = json.dumps({"inputs": [{"name": "images", "shape": [2, 28, 28], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 1568}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = post(server, "/v2/models/fashion/versions/1/infer",
                                 header + data["fashion"][:2].tobytes(), {HEADER_LENGTH: str(len(header))})
    assert status == 200
    length = int(headers[HEADER_LENGTH])
    answer = json.loads(body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert sizes == [2 * 10 * 4, 2 * 4] and len(body) == length + sum(sizes)
    probabilities = np.frombuffer(body[length:length + 80], "<f4").reshape(2, 10)
    np.testing.assert_allclose(probabilities, expected.probabilities[:2], atol=1e-6)
    assert np.frombuffer(body[length + 80:], "<i4").tolist() == expected.classes[:2].tolist()


def test_gzip_request_body_is_decompressed(server, data):
    body = gzip.compress(json.dumps(one_image_document(data["fashion"][0])).encode())
    status, _, answer = post(server, "/v2/models/fashion/infer", body,
                             {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 200 and [o["name"] for o in json.loads(answer)["outputs"]] == ["probabilities", "classes"]


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"{not json", {}, "the JSON header is not valid JSON"),
    (b"[1, 2]", {}, "the JSON header must be an object, not an array"),
    (b"", {}, "the request has no JSON header"),
    (b'{"inputs": []}', {}, "the request must have \"inputs\""),
    (b'{"inputs": [{}]}', {HEADER_LENGTH: "99"}, "the Inference-Header-Content-Length header says 99 bytes of "
                                                 "JSON but the body has only 16 bytes"),
    (b'{"inputs": [{}]}', {HEADER_LENGTH: "-3"}, "the Inference-Header-Content-Length header must be the byte "
                                                 "length of the JSON header"),
    (b'{"inputs":[{"name":"images","shape":[1,28,28],"datatype":"UINT8","parameters":{"binary_data_size":784}}]}'
     + bytes(700), "header", "input 'images' declares 784 bytes of binary data but only 700 remain"),
    (b'{"inputs":[{"name":"images","shape":[1,28,28],"datatype":"UINT8","parameters":{"binary_data_size":784}}]}'
     + bytes(800), "header", "800 bytes of binary data follow the JSON header but the inputs' binary_data_size "
                             "add up to 784"),
    (b'{"inputs":[{"name":"images","shape":[1],"datatype":"UINT7","data":[1]}]}', {},
     "input 'images' has datatype 'UINT7'; the datatypes are BOOL"),
    (b'{"inputs":[{"name":"images","shape":[1,28,28],"datatype":"UINT8","data":[1,2,3]}]}', {},
     "input 'images' has 3 elements of data; shape [1, 28, 28] needs 784"),
    (b'{"inputs":[{"name":"images","shape":[2,2],"datatype":"UINT8","data":[[1,2],[3]]}]}', {},
     "input 'images''s data is a ragged array"),
    (b'{"inputs":[{"name":"images","shape":[2],"datatype":"UINT8","data":[1,300]}]}', {},
     "input 'images': values outside the UINT8 range 0..255"),
    (b'{"inputs":[{"name":"images","shape":[2],"datatype":"UINT8","data":[1,"a"]}]}', {},
     "input 'images' is UINT8: its data must be whole numbers"),
    (b'{"inputs":[{"name":"images","shape":[-1],"datatype":"UINT8","data":[]}]}', {},
     "input 'images''s shape must be an array of dimensions"),
    (b'{"inputs":[{"name":"images","shape":[1],"datatype":"UINT8"}]}', {}, "input 'images' has no data"),
    (b'{"inputs":[{"name":"images","shape":[1],"datatype":"UINT8","data":[1]}],"outputs":[{"name":"p",'
     b'"parameters":{"binary_data":"yes"}}]}', {}, "output 'p''s binary_data must be true or false, not a string"),
    (b'{"inputs":[{"name":"images","shape":[1],"datatype":"UINT8","data":[1]}],"parameters":{"timeout":-1}}', {},
     "the timeout parameter must be a whole number of microseconds"),
])
def test_malformed_requests_are_400_with_a_clear_message(server, body, headers, message):
    if headers == "header":  # the JSON header's length: everything up to the binary zeros
        headers = {HEADER_LENGTH: str(body.index(b"}]}") + 3)}
    status, _, answer = post(server, "/v2/models/fashion/infer", body, headers)
    assert status == 400, answer
    error = json.loads(answer)
    assert error["error"].startswith(message), error
    assert error["code"] == "INVALID_ARGUMENT"


def test_servicer_errors_keep_the_status_of_their_grpc_code(server, data):
    status, answer = infer_json(server, one_image_document(data["fashion"][0]), model="nope")
    assert status == 404 and answer["code"] == "NOT_FOUND" and "'nope'" in answer["error"]
    status, answer = infer_json(server, {"inputs": [{"name": "images", "shape": [1, 27, 28], "datatype": "UINT8",
                                                     "data": [0] * 756}]})
    assert status == 400 and answer["code"] == "INVALID_ARGUMENT"
    status, _, body = post(server, "/v2/models/fashion/versions/x/infer",
                           json.dumps(one_image_document(data["fashion"][0])).encode())
    assert status == 400 and "not a version number" in json.loads(body)["error"]


def test_timeout_parameter_sets_the_deadline(server, data):
    status, answer = infer_json(server, one_image_document(data["fashion"][0], parameters={"timeout": 1}))
    assert status == 504 and answer["code"] == "DEADLINE_EXCEEDED", answer
    status, _ = infer_json(server, one_image_document(data["fashion"][0], parameters={"timeout": 30_000_000}))
    assert status == 200


def test_health_answers_as_triton(server):
    assert http_get(server.http_port, "/v2/health/live") == (200, "")
    assert http_get(server.http_port, "/v2/health/ready") == (200, "")
    assert http_get(server.http_port, "/v2/models/fashion/ready") == (200, "")
    assert http_get(server.http_port, "/v2/models/nope/ready") == (400, "")
    assert http_get(server.http_port, "/v2/models/fashion/versions/7/ready") == (400, "")
    status, body = http_get(server.http_port, "/v2/models/fashion/versions/1/stats")
    assert status == 200 and [s["version"] for s in json.loads(body)["model_stats"]] == ["1"]
    status, body = http_get(server.http_port, "/v2/models/fashion/versions/1/config")
    assert status == 200 and json.loads(body)["name"] == "fashion"
