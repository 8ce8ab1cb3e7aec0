"""Hostile tensors through all three APIs: shapes whose element count overflows or that would broadcast one
value into hundreds of megabytes, negative dimensions, unknown dtypes, out-of-range and non-finite values,
version strings that only look like numbers. Each gets INVALID_ARGUMENT (or NOT_FOUND for a version),
quickly, and never INTERNAL."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

HUGE = [2**62, 28, 28]


def refused(call, request, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == code, (request if len(str(request)) < 300 else type(request), info.value.details())
    assert time.perf_counter() - started < 1.0, "refused before any work"
    return info.value.details()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as channel:
        yield channel


def classify_request(model: str, dtype: int, shape: list[int], content: bytes) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(model_spec=pb.ModelSpec(name=model), tensor=pb.Tensor(dtype=dtype, shape=shape,
                                                                                     content=content))


def test_our_api_refuses_hostile_shapes_dtypes_and_values(channel):
    classify = pb_grpc.ClassifierStub(channel).Classify
    # Found by the fuzzer (bench/fuzzing.py): empty tensors whose other dimensions numpy cannot multiply.
    empty_but_huge = ([2**31, 3, 2**31, 2, 0], [0, 2**63 - 1, 2], [2**40, 2**40, 0])
    for shape, content in ((HUGE, b""), ([0, 2**62], b""), ([2**31, 2**31], b""), ([-1, 28, 28], bytes(784)),
                           ([1, 28, 28], bytes(10)), *((shape, b"") for shape in empty_but_huge)):
        refused(classify, classify_request("fashion", pb.UINT8, shape, content))
    refused(classify, classify_request("fashion", 99, [1, 28, 28], bytes(784)))
    for bad in (np.nan, np.inf, -np.inf):
        pixels = np.zeros((2, 784), np.float32)
        pixels[1, 5] = bad
        assert "NaN or infinite" in refused(classify, classify_request("digits", pb.FLOAT32, [2, 784], pixels.tobytes()))
    pixels = np.full((2, 784), 3.4e38, np.float32)
    assert "not finite" in refused(classify, classify_request("digits", pb.FLOAT32, [2, 784], pixels.tobytes()))


def infer_request(model: str, datatype: str, shape: list[int], raw: bytes | None = None, version: str = "",
                  **contents) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name="images" if model == "fashion" else "keras_tensor", datatype=datatype,
                                shape=shape)
    if raw is not None:
        request.raw_input_contents.append(raw)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


def test_open_inference_refuses_hostile_shapes_values_and_versions(channel):
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    for shape in (HUGE, [2**32, 2**32], [0, 2**40, 28], [-1, 28, 28]):
        refused(stub.ModelInfer, infer_request("fashion", "UINT8", shape, raw=b""))
    refused(stub.ModelInfer, infer_request("fashion", "UINT8", [1, 28, 28], uint_contents=[300] + [0] * 783))
    nan = np.zeros(784, np.float32)
    nan[3] = np.nan
    assert "NaN or infinite" in refused(stub.ModelInfer, infer_request("digits", "FP32", [1, 784], raw=nan.tobytes()))
    for version in ("²", "①", "１", "1 ", "-1"):
        details = refused(stub.ModelInfer, infer_request("fashion", "UINT8", [1, 28, 28], raw=bytes(784),
                                                         version=version))
        assert "is not a version number" in details, (version, details)
    # In a stream, each refused request is reported and the stream goes on.
    requests = [infer_request("fashion", "UINT8", HUGE, raw=b""), infer_request("fashion", "UINT8", [1, 28, 28],
                                                                                 raw=bytes(784))]
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert answers[0].error_message and not answers[1].error_message and answers[1].infer_response.outputs


def test_model_ready_reports_not_ready_for_a_malformed_version(channel):
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    # ModelReady answers a question: a version that is not a number is simply not ready.
    for version in ("²", "①", "１"):
        assert stub.ModelReady(oip.ModelReadyRequest(name="fashion", version=version), timeout=30).ready is False
    assert stub.ModelReady(oip.ModelReadyRequest(name="fashion", version="1"), timeout=30).ready is True


def predict_request(model: str, tensor: tensor_pb2.TensorProto, key: str = "images") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[key].CopyFrom(tensor)
    return request


def shape_of(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def test_tensorflow_serving_predict_refuses_broadcasts_unknown_dtypes_and_out_of_range_values(channel):
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    # One value for a million images: make_ndarray would broadcast it into ~750 MB.
    one_value = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=shape_of(10**6, 28, 28), int_val=[7])
    assert "at most" in refused(predict, predict_request("fashion", one_value))
    for dims in ((2**62, 28, 28), (-1, 28, 28), (1, 2**40)):
        refused(predict, predict_request("fashion", tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8,
                                                                           tensor_shape=shape_of(*dims))))
    unknown = tensor_pb2.TensorProto(dtype=1000, tensor_shape=shape_of(1, 28, 28))
    assert "dtype number 1000" in refused(predict, predict_request("fashion", unknown))
    too_big = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=shape_of(1, 28, 28), int_val=[300] * 784)
    refused(predict, predict_request("fashion", too_big))
    for size in (783, 1569, 2 * 784 + 1):  # packed content that does not fill the shape exactly
        short = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=shape_of(2, 28, 28),
                                       tensor_content=bytes(size))
        assert f"tensor_content is {size} bytes" in refused(predict, predict_request("fashion", short))
    infinite = tf.make_tensor_proto(np.full((1, 784), np.inf, np.float32))
    assert "NaN or infinite" in refused(predict, predict_request("digits", infinite, "keras_tensor"))


def test_tensorflow_serving_classify_refuses_non_finite_pixels_in_examples(channel):
    """Every path refuses NaN and infinite pixels, tf.train.Example's float_list too (NaN slipped through the
    range check there and became black pixels)."""
    classify = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify
    for bad in (np.nan, np.inf, -np.inf):
        pixels = np.zeros(784, np.float32)
        pixels[100] = bad
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "fashion"
        example = request.input.example_list.examples.add()
        example.features.feature["image"].float_list.value.extend(pixels.tolist())
        request.input.example_list.examples.add().features.feature["image"].int64_list.value.extend([0] * 784)
        details = refused(classify, request)
        assert details == "example 0: pixel values are NaN or infinite; send finite numbers (0-255)", details


def test_an_answer_over_the_message_limit_is_refused_before_the_model_runs(model_repo, tmp_path):
    """With a 256 KiB message limit, 2,000 PNGs (~160 KB) fit in a request but their answer with probabilities
    and 10 ranked labels (~400 KB) would not: refused at once, naming a number of images that does fit."""
    from archives import encode
    from conftest import ServerProcess

    from tfclassify.client import TfclassifyError

    proc = ServerProcess(model_repo, tmp_path, "--max-message-bytes", str(256 * 1024))
    try:
        images = [encode(np.full((28, 28), i % 256, np.uint8)) for i in range(2000)]
        with proc.client(max_message_bytes=256 * 1024) as client:
            client.wait_for_ready(60)
            with pytest.raises(TfclassifyError) as info:
                client.classify_encoded(images, "fashion", top_k=10, return_probabilities=True)
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "over the server's 0.2 MiB message limit: send at most" in info.value.details, info.value.details
            fits = int(info.value.details.split("send at most ")[1].split()[0])
            answer = client.classify_encoded(images[:fits], "fashion", top_k=10, return_probabilities=True)
            assert len(answer.classes) == fits
    finally:
        assert proc.stop() == 0
