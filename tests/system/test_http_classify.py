"""``/classify`` on the HTTP/REST port, with curl as people call it: one file as the body, several as a form."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
from conftest import FASHION_LABELS, metric_value
from PIL import Image


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def curl(*args: str) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a curl call."""
    result = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
                            capture_output=True, timeout=60, check=True)
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), json.loads(body)


def test_curl_classifies_a_png_in_one_line_as_grpc_does(server, client, fashion_test, tmp_path):
    path = tmp_path / "coat.png"
    path.write_bytes(png(fashion_test.images[0]))
    status, answer = curl("--data-binary", f"@{path}", f"{server.http_url}/classify/fashion")
    expected = client.classify_encoded([path.read_bytes()], "fashion", top_k=5)
    assert status == 200
    assert (answer["model"], answer["version"]) == ("fashion", 1)
    [prediction] = answer["predictions"]
    assert prediction["class"] == int(expected.classes[0])
    assert prediction["label"] == FASHION_LABELS[prediction["class"]]
    assert prediction["score"] == float(expected.scores[0])
    assert [c["class"] for c in prediction["top_k"]] == expected.top_k_classes[0].tolist()
    assert [c["label"] for c in prediction["top_k"]] == list(expected.top_k_labels[0])


def test_a_multipart_form_of_files_answers_each_by_name(server, client, fashion_test, tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"image-{i}.png"
        path.write_bytes(png(fashion_test.images[i]))
        files += ["-F", f"image=@{path}"]
    status, answer = curl(*files, f"{server.http_url}/classify/fashion/versions/1?top_k=2")
    expected = client.classify(fashion_test.images[:3], "fashion", top_k=2)
    assert status == 200
    assert [p["file"] for p in answer["predictions"]] == ["image-0.png", "image-1.png", "image-2.png"]
    assert [p["class"] for p in answer["predictions"]] == expected.classes.tolist()
    assert [len(p["top_k"]) for p in answer["predictions"]] == [2, 2, 2]


def test_classify_errors_are_json_with_the_status_of_the_grpc_code(server, fashion_test, tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(png(fashion_test.images[0]))
    base = server.http_url
    cases = [
        (f"{base}/classify/nope", 404, "nope"),
        (f"{base}/classify/fashion/versions/7", 404, "version 7"),
        (f"{base}/classify/fashion/labels/nolabel", 404, "nolabel"),
        (f"{base}/classify/fashion?top_k=11", 400, "top_k is 11"),
        (f"{base}/classify/fashion?top_k=-1", 400, "top_k must be"),
    ]
    for url, code, words in cases:
        status, answer = curl("--data-binary", f"@{path}", url)
        assert (status, sorted(answer)) == (code, ["code", "error"]), (url, answer)
        assert words in answer["error"], (url, answer)
    status, answer = curl("--data-binary", "not an image", f"{base}/classify/fashion")
    assert status == 400 and "PNG" in answer["error"], answer
    status, answer = curl("-X", "POST", f"{base}/classify/fashion")
    assert status == 400 and answer["error"].startswith("no image"), answer
    status, answer = curl(f"{base}/classify/fashion")
    assert status == 405 and "POST" in answer["error"], answer
    assert metric_value(server.metrics_text(), "tfclassify_requests_total", api="tfclassify_http",
                        method="Classify", code="NOT_FOUND") >= 2


def test_the_classifier_service_answers_protobuf_and_json_over_http(server, client, fashion_test):
    import urllib.request

    from tfclassify.common.tensors import to_tensor_proto
    from tfclassify.v1 import classifier_pb2 as pb

    message = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"), top_k=3)
    to_tensor_proto(fashion_test.images[:8], out=message.tensor)
    request = urllib.request.Request(f"{server.http_url}/tfclassify.v1.Classifier/Classify",
                                     data=message.SerializeToString(),
                                     headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers["Content-Type"] == "application/x-protobuf"
        response = pb.ClassifyResponse.FromString(answer.read())
    expected = client.classify(fashion_test.images[:8], "fashion", top_k=3)
    assert list(response.classes) == expected.classes.tolist()
    assert list(response.top_k_labels) == np.asarray(expected.top_k_labels).ravel().tolist()
    status, answer = curl("-H", "Content-Type: application/json", "-d", "{}",
                          f"{server.http_url}/tfclassify.v1.Classifier/ListModels")
    assert status == 200 and {m["modelSpec"]["name"] for m in answer["models"]} == {"digits", "fashion"}
    status, answer = curl("-H", "Content-Type: application/json", "-d", '{"modelSpec": {"name": "nope"}}',
                          f"{server.http_url}/tfclassify.v1.Classifier/GetModelMetadata")
    assert (status, answer["code"]) == (404, "NOT_FOUND") and "nope" in answer["error"]
    status, answer = curl("-H", "Content-Type: application/json", "-d", '{"modelSpec": {"nam',
                          f"{server.http_url}/tfclassify.v1.Classifier/Classify")
    assert (status, answer["code"]) == (400, "INVALID_ARGUMENT") and "JSON" in answer["error"]


def test_the_readmes_curl_lines_run(server, fashion_test, tmp_path):
    from conftest import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.index("<!-- example: curl ")
    start = text.index("```sh\n", marker) + len("```sh\n")
    script = text[start : text.index("```", start)]
    assert "localhost:8501" in script and "fashion_mnist" in script
    script = script.replace("localhost:8501", f"127.0.0.1:{server.http_port}").replace("fashion_mnist", "fashion")
    (tmp_path / "shirt.png").write_bytes(png(fashion_test.images[0]))
    Image.fromarray(fashion_test.images[1]).save(tmp_path / "boot.jpg")
    lines = script.replace("\\\n", "").splitlines()
    commands = [line.split("  # ")[0] for line in lines if line.startswith("curl ")]
    assert len(commands) == 4
    answers = []
    for command in commands:
        result = subprocess.run(["bash", "-c", f"set -o pipefail; {command} --fail-with-body -sS"], cwd=tmp_path,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        answers.append(json.loads(result.stdout))
    one, two, predict, metadata = answers
    assert len(one["predictions"]) == 1 and [len(p["top_k"]) for p in two["predictions"]] == [2, 2]
    assert two["predictions"][0]["class"] == one["predictions"][0]["class"]
    assert np.argmax(predict["predictions"][0]["probabilities"] if isinstance(predict["predictions"][0], dict)
                     else predict["predictions"][0]) == one["predictions"][0]["class"]
    assert metadata["name"] == "fashion" and metadata["inputs"][0]["name"] == "images"
