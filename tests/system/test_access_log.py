"""The access log (``--access-log-sample``): off by default; when on, one line per sampled RPC from every API
with the API, method, model, version, image count, latency and status, and nothing else (no peer, no
metadata, no hostile names echoed)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import ServerProcess
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfclassify.client import TfclassifyError
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc

FIELDS = {"time", "level", "logger", "message", "api", "method", "model", "version", "images", "ms", "status"}


def access_entries(log: str) -> list[dict]:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e for e in entries if e["logger"] == "tfclassify.access"]


def test_every_api_is_logged_with_its_fields_only(model_repo, tmp_path):
    proc = ServerProcess(model_repo, tmp_path, "--access-log-sample", "1", "--log-format", "json")
    hostile = "evil\nmodel " * 2000
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
            client.classify(np.zeros((3, 28, 28), np.uint8), "fashion")
            with pytest.raises(TfclassifyError):
                client.classify(np.zeros((1, 28, 28), np.uint8), hostile)
        with grpc.insecure_channel(proc.address) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "fashion"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 28, 28), np.uint8)))
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
            infer = oip_grpc.GRPCInferenceServiceStub(channel)
            tensor = oip.ModelInferRequest.InferInputTensor(name="images", datatype="UINT8", shape=[5, 28, 28])
            infer.ModelInfer(oip.ModelInferRequest(model_name="fashion", inputs=[tensor],
                                                   raw_input_contents=[bytes(5 * 784)]), timeout=30)
        import urllib.request

        request = urllib.request.Request(f"{proc.http_url}/v1/models/fashion:predict",
                                         data=json.dumps({"instances": np.zeros((4, 28, 28), int).tolist()}).encode())
        assert urllib.request.urlopen(request, timeout=30).status == 200
    finally:
        assert proc.stop() == 0
    entries = access_entries(proc.log())
    seen = {(e["api"], e["method"], e["model"], e["version"], e["images"], e["status"]) for e in entries}
    assert ("tfclassify", "Classify", "fashion", "1", 3, "OK") in seen
    assert ("tfclassify", "Classify", f"<unknown, {len(hostile)} characters>", "", 0, "NOT_FOUND") in seen
    assert ("tensorflow_serving", "Predict", "fashion", "1", 2, "OK") in seen
    assert ("open_inference", "ModelInfer", "fashion", "1", 5, "OK") in seen
    assert ("tensorflow_serving_http", "Predict", "fashion", "1", 4, "OK") in seen
    for entry in entries:
        assert set(entry) == FIELDS, entry
        assert 0 < entry["ms"] < 30_000
    assert "evil" not in proc.log(), "a name that is not served is not echoed into the log"


def test_the_access_log_is_off_by_default(server):
    with server.client() as client:
        client.classify(np.zeros((1, 28, 28), np.uint8), "fashion")
    assert "tfclassify.access" not in server.log()
