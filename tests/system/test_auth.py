"""Bearer-token authentication (``--auth-tokens``): UNAUTHENTICATED without a valid token on every service but
health, PERMISSION_DENIED for a model the token may not use, through all three APIs, the CLI and the scorer;
the token file is re-read when it changes, and no token reaches the log."""

from __future__ import annotations

import os
import subprocess

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import FASHION_DIR, ServerProcess, tfclassify_cmd, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfclassify.client import TfclassifyError
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.inference import grpc_service_pb2_grpc as oip_grpc

EVERYTHING = "all-models-token-3f9c0e7b5d2a48c1"
FASHION_ONLY = "fashion-only-token-b71d2e55c0a94f"
IMAGE = np.zeros((1, 28, 28), np.uint8)


@pytest.fixture(scope="module")
def guarded(model_repo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    tokens = folder / "tokens"
    tokens.write_text(f"# scoring jobs\n{EVERYTHING} *\n{FASHION_ONLY} fashion\n")
    # With every RPC in the access log: tokens must not reach it either.
    proc = ServerProcess(model_repo, folder, "--auth-tokens", str(tokens), "--access-log-sample", "1")
    proc.tokens = tokens
    with proc.client(token=EVERYTHING) as client:
        client.wait_for_ready(60)
    yield proc
    assert proc.stop() == 0


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except TfclassifyError as exc:
        return exc.code
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_our_api_needs_a_valid_token_and_one_allowed_the_model(guarded):
    with guarded.client() as anonymous, guarded.client(token="wrong-token-wrong-token") as stranger, \
            guarded.client(token=FASHION_ONLY) as shop, guarded.client(token=EVERYTHING) as job:
        assert code_of(lambda: anonymous.classify(IMAGE, "fashion")) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: stranger.classify(IMAGE, "fashion")) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: shop.classify(IMAGE, "fashion")) == grpc.StatusCode.OK
        assert code_of(lambda: shop.classify(IMAGE, "digits")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: shop.get_model_metadata("digits")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: job.classify(np.zeros((1, 784), np.float32), "digits")) == grpc.StatusCode.OK
        assert anonymous.is_server_ready(), "health needs no token (probes carry none)"


def test_tensorflow_serving_and_open_inference_are_guarded_alike(guarded):
    shop = (("authorization", f"Bearer {FASHION_ONLY}"),)
    with grpc.insecure_channel(guarded.address) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "fashion"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(IMAGE))
        assert code_of(lambda: predict(request, timeout=30)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: predict(request, timeout=30, metadata=shop)) == grpc.StatusCode.OK
        request.model_spec.name = "digits"
        assert code_of(lambda: predict(request, timeout=30, metadata=shop)) == grpc.StatusCode.PERMISSION_DENIED
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        assert code_of(lambda: infer.ServerMetadata(oip.ServerMetadataRequest(), timeout=30)) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert infer.ServerMetadata(oip.ServerMetadataRequest(), timeout=30, metadata=shop).name == "tfclassify"
        stream = infer.ModelStreamInfer(iter([oip.ModelInferRequest(model_name="fashion")]), timeout=30)
        assert code_of(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_the_http_port_needs_the_same_tokens_but_not_for_health(guarded, tmp_path):
    import io
    import json
    import urllib.error
    import urllib.request

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png, format="PNG")

    def status(path: str, token: str | None, data: bytes | None = png.getvalue()) -> tuple[int, dict, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{guarded.http_url}{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}"), answer.headers.get("WWW-Authenticate", "")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), exc.headers.get("WWW-Authenticate", "")

    code, body, challenge = status("/classify/fashion", None)
    assert (code, body["code"], challenge) == (401, "UNAUTHENTICATED", "Bearer")
    assert "Authorization: Bearer <token>" in body["error"]
    assert status("/classify/fashion", "wrong-token-wrong-token")[0] == 401
    code, body, _ = status("/classify/digits", FASHION_ONLY)
    assert (code, body["code"]) == (403, "PERMISSION_DENIED") and "'digits'" in body["error"]
    assert status("/classify/fashion", FASHION_ONLY)[0] == 200
    assert status("/classify/fashion", EVERYTHING)[0] == 200
    assert status("/v2/health/ready", None, None)[0] == 200, "health needs no token, as over gRPC"
    assert status("/v2/models/fashion", None, None)[0] == 401, "the rest of the protocol does"
    log = guarded.log()
    assert "api=tfclassify_http method=Classify model='fashion' version=1 images=1" in log
    assert "api=tfclassify_http method=Classify" in log and "status=UNAUTHENTICATED" in log


def test_the_cli_and_the_scorer_send_the_token(guarded, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(FASHION_ONLY + "\n")
    score = ["score", "--server", guarded.address, "--model", "fashion", "--dataset", "fashion_mnist",
             "--data-dir", str(FASHION_DIR), "--limit", "64", "--no-progress"]
    refused = subprocess.run(tfclassify_cmd(*score), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and refused.stderr.count("\n") == 1
    scored = subprocess.run(tfclassify_cmd(*score, "--token-file", str(token_file)), capture_output=True, text=True,
                            timeout=120)
    assert scored.returncode == 0, scored.stderr
    env = {**os.environ, "TFCLASSIFY_TOKEN": FASHION_ONLY}
    models = subprocess.run(tfclassify_cmd("models", "--server", guarded.address), capture_output=True, text=True,
                            timeout=60, env=env)
    assert models.returncode == 0 and "fashion" in models.stdout, models.stderr


def test_the_token_file_is_read_again_when_it_changes_and_tokens_are_never_logged(guarded):
    new = "rotated-token-9d8c7b6a5f4e3d2c"
    original = guarded.tokens.read_text()
    guarded.tokens.write_text(original + f"{new} digits\n")
    with guarded.client(token=new) as client:
        wait_until(lambda: code_of(lambda: client.classify(np.zeros((1, 784), np.float32), "digits"))
                   == grpc.StatusCode.OK, timeout=10, interval=0.2)
        assert code_of(lambda: client.classify(IMAGE, "fashion")) == grpc.StatusCode.PERMISSION_DENIED
    log = guarded.log()
    assert "token file reloaded" in log
    assert "tfclassify.access: api=tfclassify method=Classify model='fashion' version=1 images=1" in log
    assert "status=PERMISSION_DENIED" in log and "status=UNAUTHENTICATED" in log
    for token in (EVERYTHING, FASHION_ONLY, new, "wrong-token-wrong-token"):
        assert token not in log


def test_a_malformed_token_file_stops_the_server_from_starting(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("short *\n")
    result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(model_repo), "--auth-tokens", str(tokens)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "line 1: a token must have 16 characters or more" in result.stderr


def test_reflection_and_the_metrics_port_can_be_turned_off(model_repo, tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    proc = ServerProcess(model_repo, tmp_path, "--reflection", "0", "--metrics-port", "-1")
    try:
        assert proc.metrics_port == -1
        with grpc.insecure_channel(proc.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            assert code_of(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=10))) == \
                grpc.StatusCode.UNIMPLEMENTED
        with proc.client() as client:
            client.wait_for_ready(60)
            assert len(client.classify(IMAGE, "fashion").classes) == 1
    finally:
        assert proc.stop() == 0
