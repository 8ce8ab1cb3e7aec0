"""What the three APIs share: one batching queue per version (a mix of clients
is batched together), version labels, and the metrics with their ``api`` label.

Its own server: one batch at a time (so queued requests wait together) and
a version label. The Open Inference Protocol is called here through our own
generated stub (the wire format tritonclient speaks; test_oip_api.py uses
tritonclient itself), to fire requests from three APIs within milliseconds.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import ServerProcess, metric_value
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc

CONFIG = """
models {
  name: "fashion"
  version_labels { key: "stable" value: 1 }
}
"""


@pytest.fixture(scope="module")
def shared_server(model_repo, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("shared")
    config = workdir / "models.textproto"
    config.write_text(CONFIG)
    proc = ServerProcess(
        model_repo, workdir, "--model-config", str(config), "--max-concurrent-batches", "1",
        "--max-images-per-request", "32768",
    )
    with proc.client() as client:
        client.wait_for_ready(60)
    yield proc
    assert proc.stop() == 0, proc.log()


def oip_statistics(channel: grpc.Channel) -> oip.ModelStatistics:
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    (stats,) = stub.ModelStatistics(oip.ModelStatisticsRequest(name="fashion"), timeout=30).model_stats
    return stats


def test_version_labels_work_through_tensorflow_serving(shared_server):
    with grpc.insecure_channel(shared_server.address) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "fashion"
        request.model_spec.version_label = "stable"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert response.model_spec.version.value == 1
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fashion", "version_label": "stable"}),
            timeout=30,
        )
        assert [s.version for s in status.model_version_status] == [1]


def test_requests_from_three_apis_share_one_batch(shared_server, fashion_test):
    images = fashion_test.images
    busy = np.concatenate([images] * 4)[:32768]  # 8 batches of 4096: the queue holds them for a while
    # One request for the big batch (26 MB): the library would send it as two under its 16 MiB default.
    with grpc.insecure_channel(shared_server.address) as channel, \
            shared_server.client(max_request_bytes=64 * 2**20) as client:
        before = {b.batch_size: b.compute_infer.count for b in oip_statistics(channel).batch_stats}
        classified_before = metric_value(
            shared_server.metrics_text(), "tfclassify_images_classified_total", model="fashion", version="1"
        )
        tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        inference = oip_grpc.GRPCInferenceServiceStub(channel)
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "fashion"
        predict.inputs["images"].CopyFrom(tf.make_tensor_proto(images[:2]))
        infer = oip.ModelInferRequest(model_name="fashion")
        infer.inputs.add(name="images", datatype="UINT8", shape=[3, 28, 28])
        infer.raw_input_contents.append(images[2:5].tobytes())

        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(client.classify, busy, "fashion", timeout=120)
            deadline = time.monotonic() + 30
            while metric_value(shared_server.metrics_text(), "tfclassify_queued_images", model="fashion", version="1") == 0:
                assert time.monotonic() < deadline and not big.done(), "the big request never queued"
                time.sleep(0.005)
            # Batches of 4096 run one at a time; these three queue behind the big request's rest.
            ours = client.classify_async(images[5:10], "fashion", timeout=60)
            theirs = tfs.Predict.future(predict, timeout=60)
            triton = inference.ModelInfer.future(infer, timeout=60)
            results = ours.result(), theirs.result(), triton.result()
            assert len(big.result().classes) == 32768

        after = {b.batch_size: b.compute_infer.count for b in oip_statistics(channel).batch_stats}
        assert after.get(10, 0) - before.get(10, 0) == 1, f"one batch of 2 + 3 + 5 images; batches: {after}"
        assert tf.make_ndarray(results[1].outputs["classes"]).tolist() == client.classify(images[:2], "fashion").classes.tolist()
        assert len(results[0].classes) == 5 and results[2].outputs[0].shape == [3, 10]

    text = shared_server.metrics_text()
    classified = metric_value(text, "tfclassify_images_classified_total", model="fashion", version="1")
    # Every API's images are counted: the four requests above, and the 2-image check of the Predict answer.
    assert classified - classified_before == 32768 + 5 + 2 + 3 + 2
    for api, method in (("tfclassify", "Classify"), ("tensorflow_serving", "Predict"), ("open_inference", "ModelInfer")):
        assert metric_value(text, "tfclassify_requests_total", api=api, method=method, model="fashion",
                            version="1", code="OK") >= 1, (api, method)
