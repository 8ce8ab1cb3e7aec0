"""Classify over real gRPC against a real server process."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from conftest import FASHION_LABELS, accuracy
from PIL import Image

from tfclassify.client import TfclassifyError
from tfclassify.common.tensors import from_tensor_proto, to_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_batch_classification_is_accurate_and_consistent(client, fashion_test):
    images, labels = fashion_test.images[:2000], fashion_test.labels[:2000]
    result = client.classify(images, "fashion", top_k=3, return_probabilities=True)
    assert (result.model, result.version, len(result)) == ("fashion", 1, 2000)
    assert accuracy(result.classes, labels) >= 0.80
    assert result.probabilities.shape == (2000, 10)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(result.classes, result.probabilities.argmax(axis=1))
    np.testing.assert_allclose(result.scores, result.probabilities.max(axis=1), rtol=1e-6)
    assert np.array_equal(result.top_k_classes[:, 0], result.classes)
    assert np.all(np.diff(result.top_k_scores, axis=1) <= 0), "top-k must be ranked best first"
    assert result.labels == [FASHION_LABELS[c] for c in result.classes]
    assert list(result.top_k_labels[5]) == [FASHION_LABELS[c] for c in result.top_k_classes[5]]
    first = result[0]
    assert first.label == FASHION_LABELS[first.index] and len(first.top_k) == 3


def test_single_image_and_every_accepted_layout_agree(client, fashion_test):
    images = fashion_test.images[:16]
    reference = client.classify(images, "fashion", return_probabilities=True)
    for layout in (images.reshape(16, 28, 28, 1), images.reshape(16, 784)):
        other = client.classify(layout, "fashion", return_probabilities=True)
        assert np.array_equal(other.probabilities, reference.probabilities)
    single = client.classify(images[3][np.newaxis], "fashion")
    assert len(single) == 1 and single.classes[0] == reference.classes[3]


def test_encoded_png_images_match_raw_pixels(client, fashion_test):
    images = fashion_test.images[:20]
    raw = client.classify(images, "fashion", return_probabilities=True)
    encoded = client.classify_encoded([png(i) for i in images], "fashion", return_probabilities=True)
    assert np.array_equal(encoded.probabilities, raw.probabilities)


def test_explicit_version_and_metadata(client):
    assert client.classify(np.zeros((1, 28, 28), np.uint8), "fashion", version=1).version == 1
    info = client.get_model_metadata("fashion")
    assert (info.name, info.version, info.versions) == ("fashion", 1, (1,))
    assert info.labels == tuple(FASHION_LABELS)
    assert (info.input_shape, info.input_dtype, info.output_kind) == ((28, 28), "UINT8", "probabilities")
    assert info.signature_name == "serving_default" and "CPU" in info.device
    meta = info.training_metadata  # the version's model card
    assert meta["dataset"] == "fashion_mnist" and meta["architecture"] == "mlp512" and meta["epochs"] == 3
    assert 0.80 <= meta["test_accuracy"] <= 1.0 and meta["created"].startswith("20")
    assert meta["arch"]["parameters"] == 784 * 512 + 512 + 512 * 10 + 10, "as model.summary() counts them"
    assert [c["class"] for c in meta["evaluation"]["per_class"]] == list(FASHION_LABELS)
    assert meta["data"]["train_images"] == 20000 and meta["data"]["test_images"] == 10000
    names = {m.name for m in client.list_models()}
    assert names == {"fashion", "digits"}


def test_plain_keras_export_with_float_input_and_logits(client, mnist_test):
    info = client.get_model_metadata("digits")
    assert info.labels == tuple(str(i) for i in range(10)), "no label file: index labels"
    assert (info.input_shape, info.input_dtype, info.output_kind) == ((784,), "FLOAT32", "logits")
    assert info.input_scale == pytest.approx(1 / 255)
    # Held-out half of the MNIST test set (the model trained on the first 5,000).
    images, labels = mnist_test.images[5000:7000], mnist_test.labels[5000:7000]
    result = client.classify(images, "digits", return_probabilities=True)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(result.classes, labels) >= 0.85
    scaled = client.classify((images / 255).astype(np.float32), "digits", return_probabilities=True)
    np.testing.assert_allclose(scaled.probabilities, result.probabilities, atol=1e-5)


def test_streaming_answers_every_request_in_order(server, fashion_test):
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        requests = []
        for i in range(5):
            r = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"), request_id=f"chunk-{i}", top_k=2)
            to_tensor_proto(fashion_test.images[i * 100 : (i + 1) * 100], out=r.tensor)
            requests.append(r)
        responses = list(stub.ClassifyStream(iter(requests), timeout=30))
    assert [r.request_id for r in responses] == [f"chunk-{i}" for i in range(5)]
    assert [len(r.classes) for r in responses] == [100] * 5
    assert all(len(r.top_k_classes) == 200 for r in responses)


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [
        (lambda r: r.model_spec.SetInParent() or setattr(r.model_spec, "name", "nope"), "NOT_FOUND",
         "model 'nope' not found; served models: digits, fashion"),
        (lambda r: setattr(r.model_spec, "version", 7), "NOT_FOUND", "model 'fashion' has no version 7; available: 1"),
        (lambda r: setattr(r.model_spec, "version_label", "stable"), "NOT_FOUND",
         "model 'fashion' has no version label 'stable'"),
        (lambda r: to_tensor_proto(np.zeros((2, 27, 28), np.uint8), out=r.tensor), "INVALID_ARGUMENT",
         "images have shape [2, 27, 28]; expected [N, 28, 28], [N, 28, 28, 1] or [N, 784]"),
        (lambda r: to_tensor_proto(np.zeros((2, 28, 28), np.float32), out=r.tensor), "INVALID_ARGUMENT",
         "model 'fashion' version 1 takes uint8 pixels; got FLOAT32"),
        (lambda r: to_tensor_proto(np.zeros((0, 28, 28), np.uint8), out=r.tensor), "INVALID_ARGUMENT",
         "the request holds no images"),
        (lambda r: r.tensor.CopyFrom(pb.Tensor(dtype=pb.UINT8, shape=[1, 28, 28], content=b"\0" * 700)),
         "INVALID_ARGUMENT", "tensor content is 700 bytes but shape [1, 28, 28] of UINT8 needs 784 bytes"),
        (lambda r: r.encoded.images.extend([b"\x89PNG\r\n\x1a\n garbage"]), "INVALID_ARGUMENT",
         "image 0: cannot read 16 bytes as PNG/JPEG"),
        (lambda r: r.encoded.images.extend([png(np.zeros((5000, 4000), np.uint8))]), "INVALID_ARGUMENT",
         "image 0 declares 4000x5000 pixels, over the 16,777,216 accepted per file"),
        (lambda r: to_tensor_proto(np.zeros((4097, 28, 28), np.uint8), out=r.tensor), "INVALID_ARGUMENT",
         "the request holds 4097 images; at most 4096 per request are accepted"),
        (lambda r: setattr(r, "top_k", 11), "INVALID_ARGUMENT", "top_k is 11 but model 'fashion' has 10 classes"),
        (lambda r: r.ClearField("input"), "INVALID_ARGUMENT", "the request carries no images"),
    ],
    ids=["unknown-model", "unknown-version", "unknown-label", "wrong-shape", "wrong-dtype", "empty-batch",
         "short-content", "corrupt-png", "over-20-megapixel-png", "over-max-batch", "top-k-too-large", "no-input"],
)
def test_bad_requests_get_a_clear_status_and_the_server_keeps_serving(server, fashion_test, build, code, message):
    request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"))
    to_tensor_proto(fashion_test.images[:1], out=request.tensor)
    build(request)
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=30)
        assert info.value.code().name == code
        assert message in info.value.details()
        ok = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"))
        to_tensor_proto(fashion_test.images[:3], out=ok.tensor)
        assert len(stub.Classify(ok, timeout=30).classes) == 3


def test_client_library_raises_its_own_error_type(client):
    with pytest.raises(TfclassifyError) as info:
        client.classify(np.zeros((1, 28, 28), np.uint8), "missing")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(info.value.__cause__, grpc.RpcError)
    with pytest.raises(TfclassifyError, match="uint8 pixels") as info:
        client.classify(np.zeros((1, 28, 28), np.int64), "fashion")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_probabilities_travel_as_packed_float32(server, fashion_test):
    with grpc.insecure_channel(server.address) as channel:
        request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"), return_probabilities=True)
        to_tensor_proto(fashion_test.images[:4], out=request.tensor)
        response = pb_grpc.ClassifierStub(channel).Classify(request, timeout=30)
    assert response.probabilities.dtype == pb.FLOAT32 and list(response.probabilities.shape) == [4, 10]
    assert from_tensor_proto(response.probabilities).shape == (4, 10)
    assert json.loads(client_metadata_json(server))["dataset"] == "fashion_mnist"


def client_metadata_json(server) -> str:
    with grpc.insecure_channel(server.address) as channel:
        reply = pb_grpc.ClassifierStub(channel).GetModelMetadata(
            pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name="fashion")), timeout=10
        )
    return reply.training_metadata_json


def test_a_bad_request_ends_the_stream_after_the_earlier_answers(server, fashion_test):
    requests = []
    for i in range(4):
        r = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"), request_id=str(i))
        to_tensor_proto(fashion_test.images[:10] if i != 2 else np.zeros((1, 5, 5), np.uint8), out=r.tensor)
        requests.append(r)
    received = []
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        for response in pb_grpc.ClassifierStub(channel).ClassifyStream(iter(requests), timeout=30):
            received.append(response.request_id)
    assert received == ["0", "1"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "images have shape [1, 5, 5]" in info.value.details()
