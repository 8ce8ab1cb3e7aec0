"""The Open Inference Protocol, called with Triton's real Python client
(``tritonclient.grpc``, sync and asyncio) against a real server process.

tritonclient is installed beside tfclassify (the dev extra): the scripts under
tests/oip/ make the calls in a process of their own, as a separate service
would, and print what they got as JSON; the tests here check it against our
own API's answers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import FASHION_LABELS, ROOT, metric_value, readme_example

from tfclassify.server.runtime.model_runtime import softmax


def run_triton(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory, fashion_test, mnist_test):
    path = tmp_path_factory.mktemp("oip") / "data.npz"
    np.savez(path, fashion=fashion_test.images[:300], digits=mnist_test.images[5000:5040])
    return {"path": path, "fashion": fashion_test.images[:300], "digits": mnist_test.images[5000:5040]}


@pytest.fixture(scope="module")
def sync_results(server, data):
    return json.loads(run_triton(str(ROOT / "tests" / "oip" / "sync_checks.py"), server.address, str(data["path"])))


@pytest.fixture(scope="module")
def expected(server, data):
    with server.client() as client:
        fashion = client.classify(data["fashion"], "fashion", return_probabilities=True)
        digits = client.classify(data["digits"], "digits", return_probabilities=True)
    return {"fashion": fashion, "digits": digits}


def test_health_and_server_metadata(sync_results):
    assert sync_results["health"] == {
        "live": True, "ready": True, "fashion": True, "fashion_v1": True, "fashion_v7": False, "nope": False
    }
    metadata = sync_results["server_metadata"]
    assert metadata["name"] == "tfclassify"
    assert {"classification", "model_configuration", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_config_describe_the_signature(sync_results):
    assert sync_results["fashion_metadata"] == {
        "name": "fashion",
        "versions": ["1"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": ["-1", "28", "28"]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "10"]},
            {"name": "classes", "datatype": "INT32", "shape": ["-1"]},
        ],
    }
    digits = sync_results["digits_metadata"]
    assert [(t["datatype"], t["shape"]) for t in digits["inputs"]] == [("FP32", ["-1", "784"])]
    assert [(t["datatype"], t["shape"]) for t in digits["outputs"]] == [("FP32", ["-1", "10"])]
    config = sync_results["fashion_config"]
    assert config["name"] == "fashion" and config["platform"] == "tensorflow_savedmodel"
    assert config["max_batch_size"] == 4096  # the session server's --max-images-per-request
    assert config["input"] == [{"name": "images", "data_type": "TYPE_UINT8", "dims": ["28", "28"]}]
    assert config["output"][0] == {
        "name": "probabilities", "data_type": "TYPE_FP32", "dims": ["10"], "label_filename": "labels.txt"
    }
    assert config["dynamic_batching"]["preferred_batch_size"] == [4096]
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]


def test_model_infer_raw_and_typed_contents_match_the_classifier_api(sync_results, expected):
    probabilities = expected["fashion"].probabilities
    raw = sync_results["fashion_raw"]
    assert raw["version"] == "1" and raw["outputs"] == ["probabilities", "classes"]
    np.testing.assert_allclose(raw["probabilities"], probabilities, atol=1e-6)
    assert raw["classes"] == expected["fashion"].classes.tolist()
    np.testing.assert_allclose(sync_results["fashion_one"], probabilities[:1], atol=1e-6)
    assert sync_results["fashion_typed"]["id"] == "typed-1"
    np.testing.assert_allclose(sync_results["fashion_typed"]["probabilities"], probabilities, atol=1e-6)


def test_float_model_takes_fp32_and_uint8_and_answers_its_logits(sync_results, expected):
    probabilities = expected["digits"].probabilities
    for key in ("digits_fp32", "digits_fp32_typed", "digits_uint8"):
        logits = np.asarray(sync_results[key])
        assert logits.shape == (40, 10) and (logits < 0).any(), key
        np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-5, err_msg=key)


def test_classification_extension_returns_score_index_label(sync_results, expected):
    result = expected["fashion"]
    rows = sync_results["classification"]
    assert len(rows) == 5 and all(len(row) == 3 for row in rows)
    for i, row in enumerate(rows):
        order = np.argsort(-result.probabilities[i], kind="stable")[:3]
        assert [entry.split(":", 1)[1] for entry in row] == [f"{c}:{FASHION_LABELS[c]}" for c in order]
        np.testing.assert_allclose([float(entry.split(":")[0]) for entry in row], result.probabilities[i][order], atol=1e-6)


def test_errors_have_the_protocols_status_codes(sync_results):
    errors = sync_results["errors"]
    assert errors["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert errors["unknown_version"][0] == "StatusCode.NOT_FOUND"
    assert errors["wrong_datatype"] == [
        "StatusCode.INVALID_ARGUMENT", "unexpected datatype FP32 for inference input 'images', expecting UINT8 or BYTES"
    ]
    assert errors["wrong_input_name"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected inference input 'pixels'" in errors["wrong_input_name"][1]
    assert errors["wrong_output"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected inference output 'logits'" in errors["wrong_output"][1]
    assert errors["wrong_shape"][0] == "StatusCode.INVALID_ARGUMENT"
    assert errors["byte_size"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "784 bytes of raw contents; shape [2, 28, 28] of UINT8 needs 1568" in errors["byte_size"][1]


def test_model_statistics_count_the_requests_made(sync_results):
    def stats(key):
        (entry,) = sync_results[key]["model_stats"]
        return entry

    before, after = stats("statistics_before"), stats("statistics_after")
    assert after["name"] == "fashion" and after["version"] == "1"
    # Between the two reads the script made 4 successful fashion requests (300 + 1 + 300 + 5 images)
    # and 4 that failed after reaching the model (dtype, input name, shape, byte size).
    def count(entry, section):
        return int(entry["inference_stats"].get(section, {}).get("count", 0))

    assert count(after, "success") - count(before, "success") == 4
    assert count(after, "fail") - count(before, "fail") == 4
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 606
    for section in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert count(after, section) - count(before, section) == 4, section
        assert int(after["inference_stats"][section]["ns"]) > 0
    assert int(after["execution_count"]) > int(before.get("execution_count", 0))
    assert int(after["last_inference"]) > 0
    assert sum(int(b["compute_infer"]["count"]) for b in after["batch_stats"]) == int(after["execution_count"])


def test_asyncio_client_concurrent_calls_and_a_stream(server, data, expected):
    results = json.loads(run_triton(str(ROOT / "tests" / "oip" / "async_checks.py"), server.address, str(data["path"])))
    probabilities = expected["fashion"].probabilities
    assert results["live"] and results["ready"]
    assert [r["id"] for r in results["concurrent"]] == [str(i) for i in range(16)]
    for i, r in enumerate(results["concurrent"]):
        np.testing.assert_allclose(r["probabilities"], probabilities[4 * i : 4 * i + 4], atol=1e-6)
    first, failed, last = results["stream"]
    assert first["id"] == "0" and last["id"] == "2"
    np.testing.assert_allclose(first["probabilities"], probabilities[0:2], atol=1e-6)
    np.testing.assert_allclose(last["probabilities"], probabilities[2:5], atol=1e-6)
    assert "'nope' not found" in failed["error"], "a failed request is reported in the stream, which goes on"


def test_requests_are_counted_under_the_open_inference_api_label(server, sync_results):
    text = server.metrics_text()
    assert metric_value(text, "tfclassify_requests_total", api="open_inference", method="ModelInfer",
                        model="fashion", version="1", code="OK") >= 4
    assert metric_value(text, "tfclassify_requests_total", api="open_inference", method="ModelInfer",
                        model="", version="", code="NOT_FOUND") >= 1


def test_readme_example_runs(server, expected):
    code = readme_example("open-inference", server.address, "fashion")
    zeros = np.zeros((1, 28, 28), np.uint8)
    with server.client() as client:
        top = client.classify(zeros, "fashion", top_k=3, return_probabilities=True)
    printed = run_triton("-c", code).strip()
    # Triton's "score:index:label" strings; the scores to 1e-6, as a batch's other images may change the last
    # bit of a float32 (and so the sixth decimal printed).
    entries = re.findall(r"b'([0-9.]+):(\d+):([^']+)'", printed)
    assert [(int(c), label) for _, c, label in entries] == [(int(c), FASHION_LABELS[c]) for c in top.top_k_classes[0]]
    assert np.allclose([float(score) for score, _, _ in entries],
                       [top.probabilities[0][c] for c in top.top_k_classes[0]], atol=2e-6), printed
