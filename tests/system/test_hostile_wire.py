"""Bytes that are not the message a method expects, methods we do not implement, and names long enough to
break a client's metadata limit: clean statuses, no tracebacks in the log, streams that end with the error."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from tfclassify.inference import grpc_service_pb2
from tfclassify.server.apis.services import IMAGE_METHODS
from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

SERVICES = (
    pb.DESCRIPTOR.services_by_name["Classifier"],
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
#: Not a protobuf message of any type: a field number 0 is invalid, and the length runs past the end.
GARBAGE = b"\x00\xff\xff\xff\xff garbage"


def raw_call(channel: grpc.Channel, service, method):
    path = f"/{service.full_name}/{method.name}"
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    return kind[method.client_streaming, method.server_streaming](
        path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def test_the_methods_accepted_on_their_own_exist():
    # A misspelt name would quietly leave that method in the shared generic handler.
    assert {f"{s.full_name}/{m.name}" for s in SERVICES for m in s.methods} >= IMAGE_METHODS


def test_every_method_refuses_bytes_that_are_not_its_message(server):
    tracebacks = server.log().count("Traceback")
    with grpc.insecure_channel(server.address) as channel:
        for service in SERVICES:
            for method in service.methods:
                call = raw_call(channel, service, method)
                request = iter([GARBAGE]) if method.client_streaming else GARBAGE
                with pytest.raises(grpc.RpcError) as info:
                    response = call(request, timeout=10)
                    if method.server_streaming:
                        list(response)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.full_name, info.value.details())
                assert f"not a valid {method.input_type.full_name} message" in info.value.details()
    assert server.log().count("Traceback") == tracebacks, "expected client errors log no tracebacks"


def test_a_stream_answers_what_came_before_a_malformed_message_then_ends_with_the_error(server):
    good = pb.ClassifyRequest(model_spec=pb.ModelSpec(name="fashion"),
                              tensor=pb.Tensor(dtype=pb.UINT8, shape=[1, 28, 28], content=bytes(784)))
    with grpc.insecure_channel(server.address) as channel:
        stream = channel.stream_stream("/tfclassify.v1.Classifier/ClassifyStream", request_serializer=lambda b: b,
                                       response_deserializer=pb.ClassifyResponse.FromString)
        answers = []
        with pytest.raises(grpc.RpcError) as info:
            for answer in stream(iter([good.SerializeToString()] * 2 + [GARBAGE]), timeout=30):
                answers.append(answer)
    assert len(answers) == 2 and all(len(a.classes) == 1 for a in answers)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request 2 of the stream: ")


def test_unimplemented_methods_say_so_without_a_traceback(server):
    from tensorflow_serving.apis import model_management_pb2, regression_pb2

    tracebacks = server.log().count("Traceback")
    with grpc.insecure_channel(server.address) as channel:
        for path, request in (("/tensorflow.serving.PredictionService/Regress", regression_pb2.RegressionRequest()),
                              ("/tensorflow.serving.ModelService/HandleReloadConfigRequest",
                               model_management_pb2.ReloadConfigRequest())):
            call = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "is not implemented by tfclassify" in info.value.details()
    assert server.log().count("Traceback") == tracebacks


def test_a_huge_model_name_is_not_echoed_whole(server):
    name = "m" * 20_000
    with grpc.insecure_channel(server.address) as channel:
        classify = pb_grpc.ClassifierStub(channel).Classify
        with pytest.raises(grpc.RpcError) as info:
            classify(pb.ClassifyRequest(model_spec=pb.ModelSpec(name=name)), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    assert len(info.value.details()) < 1200 and "characters)" in info.value.details()
