"""TensorFlow Serving's API, called with the real stubs of ``tensorflow-serving-api``
against a real server process (the session ``server``: ``fashion`` and ``digits``)."""

from __future__ import annotations

import io
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_LABELS, metric_value, readme_example
from PIL import Image
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfclassify.server.runtime.model_runtime import softmax


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(model: str, images: np.ndarray, input_name: str = "images", **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(images))
    return request


def typed_uint8_proto(images: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with the pixels in ``int_val`` (no tensor_content), as some clients send them."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in images.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=shape, int_val=images.ravel().tolist())


def example(feature: tf.train.Feature, name: str = "image") -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={name: feature}))


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_answers_the_signature_outputs_with_tensor_content_and_typed_values(stub, client, fashion_test):
    images = fashion_test.images[:64]
    expected = client.classify(images, "fashion", return_probabilities=True)

    response = stub.Predict(predict_request("fashion", images), timeout=30)
    assert response.model_spec.name == "fashion"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert sorted(response.outputs) == ["classes", "probabilities"]
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (64, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-6)
    assert tf.make_ndarray(response.outputs["classes"]).tolist() == expected.classes.tolist()

    typed = predict_pb2.PredictRequest()
    typed.model_spec.name = "fashion"
    typed.inputs["images"].CopyFrom(typed_uint8_proto(images))
    typed_response = stub.Predict(typed, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(typed_response.outputs["probabilities"]), expected.probabilities, atol=1e-6)


def test_predict_output_filter_version_and_signature_name(stub):
    request = predict_request("fashion", np.zeros((3, 28, 28), np.uint8), version=1, signature_name="serving_default")
    request.output_filter.append("classes")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["classes"]
    assert tf.make_ndarray(response.outputs["classes"]).shape == (3,)
    assert response.model_spec.version.value == 1


def test_predict_on_a_plain_keras_float_model_returns_its_raw_logits(stub, client, mnist_test):
    metadata = stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "digits"}, metadata_field=["signature_def"]),
        timeout=30,
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    (input_name,) = signature.inputs
    (output_name,) = signature.outputs
    assert signature.inputs[input_name].dtype == types_pb2.DT_FLOAT

    images = mnist_test.images[5000:5100]
    pixels = images.reshape(-1, 784).astype(np.float32) / 255
    response = stub.Predict(predict_request("digits", pixels, input_name=input_name), timeout=30)
    logits = tf.make_ndarray(response.outputs[output_name])
    assert logits.shape == (100, 10)
    assert (logits < 0).any(), "logits as the model computes them, not probabilities"
    expected = client.classify(images, "digits", return_probabilities=True).probabilities
    np.testing.assert_allclose(softmax(logits), expected, atol=1e-5)


def test_classify_reads_images_from_every_documented_feature_kind(stub, client, fashion_test):
    image = fashion_test.images[7]
    expected = client.classify(image[None], "fashion", return_probabilities=True).probabilities[0]
    flat = image.ravel()
    examples = [
        example(tf.train.Feature(int64_list=tf.train.Int64List(value=flat.tolist()))),
        example(tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32).tolist()))),
        example(tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(image)])), name="image/encoded"),
        example(tf.train.Feature(bytes_list=tf.train.BytesList(value=[flat.tobytes()]))),
    ]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "fashion"
    request.input.example_list.examples.extend(examples)
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.name == "fashion" and response.model_spec.version.value == 1
    assert len(response.result.classifications) == 4
    for classification in response.result.classifications:
        assert [c.label for c in classification.classes] == FASHION_LABELS
        np.testing.assert_allclose([c.score for c in classification.classes], expected, atol=1e-6)

    # Context features apply to examples that do not set them.
    with_context = classification_pb2.ClassificationRequest()
    with_context.model_spec.name = "fashion"
    with_context.input.example_list_with_context.examples.add()
    with_context.input.example_list_with_context.context.CopyFrom(examples[0])
    scores = [c.score for c in stub.Classify(with_context, timeout=30).result.classifications[0].classes]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_get_model_metadata_returns_the_served_signature_def(stub):
    response = stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "fashion"}, metadata_field=["signature_def"]),
        timeout=30,
    )
    assert response.model_spec.name == "fashion" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["images"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [-1, 28, 28]
    assert signature.outputs["probabilities"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 10]


def test_get_model_status_reports_the_available_version(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    response = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fashion"}), timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)
    ]
    with pytest.raises(grpc.RpcError) as error:
        stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}), timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        stub.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fashion", "version": {"value": 7}}), timeout=30
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


ZEROS = np.zeros((2, 28, 28), np.uint8)


def _bad_output_filter():
    request = predict_request("fashion", ZEROS)
    request.output_filter.append("logits")
    return request


@pytest.mark.parametrize(
    ("make_request", "code", "fragment"),
    [
        (lambda: predict_request("nope", ZEROS), grpc.StatusCode.NOT_FOUND, "'nope' not found"),
        (lambda: predict_request("fashion", ZEROS, version=9), grpc.StatusCode.NOT_FOUND, "no version 9"),
        (lambda: predict_request("fashion", ZEROS, version_label="stable"), grpc.StatusCode.INVALID_ARGUMENT, "label"),
        (lambda: predict_request("fashion", ZEROS, input_name="x"), grpc.StatusCode.INVALID_ARGUMENT,
         "input tensor alias not found in signature: x"),
        (lambda: predict_request("fashion", ZEROS.astype(np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
         "must be uint8"),
        (lambda: predict_request("fashion", np.zeros((2, 27, 28), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
         "[-1, 28, 28]"),
        (lambda: predict_request("fashion", ZEROS, signature_name="classify"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "classify" not found'),
        (_bad_output_filter, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: logits"),
    ],
    ids=["unknown-model", "unknown-version", "unknown-label", "wrong-input-name", "wrong-dtype", "wrong-shape",
         "unknown-signature", "unknown-output"],
)
def test_predict_errors_have_tensorflow_servings_status_codes(stub, make_request, code, fragment):
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(make_request(), timeout=30)
    assert error.value.code() == code
    assert fragment in error.value.details()


def test_classify_metadata_and_unimplemented_errors(stub):
    empty = classification_pb2.ClassificationRequest(model_spec={"name": "fashion"})
    no_image = classification_pb2.ClassificationRequest(model_spec={"name": "fashion"})
    no_image.input.example_list.examples.add().features.feature["pixels"].int64_list.value.extend([0] * 784)
    short = classification_pb2.ClassificationRequest(model_spec={"name": "fashion"})
    short.input.example_list.examples.add().features.feature["image"].int64_list.value.extend([0] * 100)
    cases = [
        (stub.Classify, empty, grpc.StatusCode.INVALID_ARGUMENT, "Input is empty"),
        (stub.Classify, no_image, grpc.StatusCode.INVALID_ARGUMENT, "no image feature: expected one named 'image'"),
        (stub.Classify, short, grpc.StatusCode.INVALID_ARGUMENT, "holds 100 values; expected 28x28=784"),
        (stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "fashion"}),
         grpc.StatusCode.INVALID_ARGUMENT, "at least one metadata_field"),
        (stub.GetModelMetadata,
         get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "fashion"}, metadata_field=["x"]),
         grpc.StatusCode.INVALID_ARGUMENT, "Metadata field x is not supported"),
        (stub.Regress, regression_pb2.RegressionRequest(model_spec={"name": "fashion"}),
         grpc.StatusCode.UNIMPLEMENTED, ""),
    ]
    for method, request, code, fragment in cases:
        with pytest.raises(grpc.RpcError) as error:
            method(request, timeout=30)
        assert (error.value.code(), fragment in (error.value.details() or "")) == (code, True), error.value.details()


def test_requests_are_counted_under_the_tensorflow_serving_api_label(stub, server):
    before = metric_value(server.metrics_text(), "tfclassify_requests_total", api="tensorflow_serving",
                          method="Predict", model="fashion", version="1", code="OK")
    for _ in range(3):
        stub.Predict(predict_request("fashion", ZEROS), timeout=30)
    after = metric_value(server.metrics_text(), "tfclassify_requests_total", api="tensorflow_serving",
                         method="Predict", model="fashion", version="1", code="OK")
    assert after - before == 3


def test_readme_example_runs(server, client):
    code = readme_example("tensorflow-serving", server.address, "fashion")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = client.classify(ZEROS, "fashion", return_probabilities=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("Predict:", "Classify:"))]
    assert lines == [
        f"Predict: {expected.classes.tolist()}",
        f"Classify: {expected.labels[0]} {expected.scores[0]:.4f}",
    ]
