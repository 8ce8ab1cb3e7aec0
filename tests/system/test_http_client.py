"""The client library and the CLI over the server's HTTP port (``ClassifierClient("http://...")``): the same results,
errors, splitting, deadlines, tokens and TLS as over gRPC, against real server processes."""

from __future__ import annotations

import json
import subprocess

import grpc
import numpy as np
import pytest
from certificates import Authority
from conftest import FASHION_DIR, ServerProcess, metric_value, tfclassify_cmd, wait_until
from PIL import Image

from tfclassify.client import ClassifierClient, TfclassifyError, aio
from tfclassify.client.tls import ssl_context

IMAGE = np.zeros((1, 28, 28), np.uint8)


@pytest.fixture()
def web(server):
    with ClassifierClient(server.http_url, retries=0) as client:
        yield client


def error_of(call, *args) -> TfclassifyError:
    with pytest.raises(TfclassifyError) as caught:
        call(*args)
    return caught.value


def same_result(a, b) -> None:
    assert (a.model, a.version, a.labels, a.top_k_labels) == (b.model, b.version, b.labels, b.top_k_labels)
    for name in ("classes", "scores", "top_k_classes", "top_k_scores"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.probabilities is None) == (b.probabilities is None)
    if a.probabilities is not None:
        assert np.array_equal(a.probabilities, b.probabilities)


def png(image: np.ndarray, path) -> bytes:
    Image.fromarray(image).save(path)
    return path.read_bytes()


def test_results_over_http_equal_those_over_grpc(server, client, web, fashion_test, mnist_test, tmp_path):
    images = fashion_test.images[:300]
    same_result(web.classify(images, "fashion", top_k=3, return_probabilities=True),
                client.classify(images, "fashion", top_k=3, return_probabilities=True))
    same_result(web.classify(images[:5], "fashion", omit_labels=True), client.classify(images[:5], "fashion",
                                                                                         omit_labels=True))
    digits = (mnist_test.images[:20].reshape(20, 784) / 255).astype(np.float32)
    same_result(web.classify(digits, "digits", top_k=2), client.classify(digits, "digits", top_k=2))
    same_result(web.classify_async(images[:50], "fashion", top_k=2).result(),
                client.classify(images[:50], "fashion", top_k=2))
    files = [png(fashion_test.images[i], tmp_path / f"{i}.png") for i in range(4)]
    same_result(web.classify_encoded(files, "fashion", top_k=2), client.classify_encoded(files, "fashion", top_k=2))
    assert web.get_model_metadata("fashion") == client.get_model_metadata("fashion")
    assert web.get_model_metadata("fashion", version=1) == client.get_model_metadata("fashion", version=1)
    assert web.list_models() == client.list_models()
    assert web.get_model_status("fashion") == client.get_model_status("fashion")
    assert web.get_repository_status() == client.get_repository_status()
    assert web.is_server_ready()
    web.wait_for_ready(5)


def test_feedback_over_http(web, fashion_test):
    images, true = fashion_test.images[2000:2010], fashion_test.labels[2000:2010]
    first = web.classify(images, "fashion", keep_for_feedback=True, request_id="http-review-1")
    result = web.feedback("fashion", "http-review-1", true)
    assert (result.model, result.version, result.labelled) == ("fashion", 1, 10)
    assert result.correct == int(np.sum(first.classes == true))
    again = error_of(lambda: web.feedback("fashion", "http-review-1", true))
    assert again.code == grpc.StatusCode.NOT_FOUND and "feedback was already given" in again.details


def test_errors_over_http_have_the_codes_and_messages_of_grpc(client, web):
    calls = [
        lambda c: c.classify(IMAGE, "nope"),
        lambda c: c.classify(IMAGE, "fashion", version=7),
        lambda c: c.classify(IMAGE, "fashion", top_k=11),
        lambda c: c.classify(np.zeros((1, 30, 30), np.uint8), "fashion"),
        lambda c: c.get_model_metadata("nope"),
        lambda c: c.get_model_status("nope"),
        lambda c: c.feedback("fashion", "never-kept", [1]),
        lambda c: c.classify_encoded([b"not an image"], "fashion"),
        lambda c: c.classify(IMAGE, ""),  # refused by the library before anything is sent
    ]
    for call in calls:
        over_grpc, over_http = error_of(call, client), error_of(call, web)
        assert (over_http.code, over_http.details) == (over_grpc.code, over_grpc.details)


def test_a_large_batch_goes_as_several_http_requests(server, client, fashion_test):
    images = fashion_test.images[:1000]
    count = lambda: metric_value(server.metrics_text(), "tfclassify_requests_total",  # noqa: E731
                                 api="tfclassify_http", method="Classify")
    before = count()
    # 784 bytes an image: 200 images a request, 5 requests.
    with ClassifierClient(server.http_url, retries=0, max_request_bytes=200 * 784) as small:
        same_result(small.classify(images, "fashion", top_k=2), client.classify(images, "fashion", top_k=2))
        assert count() - before == 5
        same_result(small.classify_async(images, "fashion").result(), client.classify(images, "fashion"))
        assert count() - before == 10


def test_a_deadline_that_passes_is_deadline_exceeded(server, fashion_test):
    images = np.tile(fashion_test.images[:1000], (20, 1, 1))  # 20,000 images
    with ClassifierClient(server.http_url, retries=0, timeout=0.005) as hurried:
        assert error_of(lambda: hurried.classify(images, "fashion")).code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert hurried.classify(IMAGE, "fashion", timeout=30).classes.shape == (1,), "the next call is served"


def test_the_asyncio_client_over_http(server, client, fashion_test):
    import asyncio

    async def main():
        async with aio.ClassifierClient(server.http_url, retries=0) as web:
            assert await web.is_server_ready()
            result = await web.classify(fashion_test.images[:64], "fashion", top_k=2)
            missing = None
            try:
                await web.get_model_metadata("nope")
            except TfclassifyError as exc:
                missing = exc.code
            return result, missing

    result, missing = asyncio.run(main())
    same_result(result, client.classify(fashion_test.images[:64], "fashion", top_k=2))
    assert missing == grpc.StatusCode.NOT_FOUND


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(tfclassify_cmd(*args), capture_output=True, text=True, timeout=300)


def test_the_cli_over_http(server, fashion_test, tmp_path):
    outputs = {}
    for name, address in (("grpc", server.address), ("http", server.http_url)):
        out = tmp_path / f"{name}.jsonl"
        result = run_cli("score", "--server", address, "--model", "fashion", "--dataset", "fashion_mnist",
                         "--data-dir", str(FASHION_DIR), "--limit", "500", "--batch-size", "128", "--top-k", "2",
                         "--output", str(out), "--no-progress")
        assert result.returncode == 0, result.stderr
        outputs[name] = [{k: v for k, v in json.loads(line).items() if k not in ("seconds",)}
                         for line in out.read_text().splitlines()]
    assert len(outputs["http"]) == 500 and outputs["http"] == outputs["grpc"]
    path = tmp_path / "coat.png"
    png(fashion_test.images[0], path)
    classified = [run_cli("classify", "--server", address, "--model", "fashion", "--json", str(path))
                  for address in (server.address, server.http_url)]
    assert classified[1].returncode == 0 and classified[1].stdout == classified[0].stdout, classified[1].stderr
    listing = run_cli("models", "--server", server.http_url)
    assert listing.returncode == 0 and listing.stdout == run_cli("models", "--server", server.address).stdout
    described = run_cli("models", "fashion", "--server", server.http_url)
    assert json.loads(described.stdout)["labels"][1] == "Trouser"
    health = run_cli("health", "--server", server.http_url)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stderr


def test_the_cli_says_in_one_line_when_an_http_server_is_unreachable(server):
    cases = [
        (("models", "--server", "http://127.0.0.1:1", "--timeout", "2"),
         "tfclassify: error: server http://127.0.0.1:1: UNAVAILABLE: failed to connect to http://127.0.0.1:1"),
        (("score", "--server", "http://127.0.0.1:1", "--model", "fashion", "--dataset", "fashion_mnist",
          "--data-dir", str(FASHION_DIR), "--timeout", "2", "--no-progress", "--max-retries", "0"),
         "UNAVAILABLE: failed to connect to http://127.0.0.1:1"),
        (("health", "--server", "http://127.0.0.1:1", "--timeout", "1"), "not serving"),
        (("models", "--server", f"http://{server.address}", "--timeout", "5"), "a gRPC port?"),
        (("models", "--server", server.http_url, "--tls-ca", "/nonexistent.pem"), "need an https:// address"),
    ]
    for args, needle in cases:
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr
        assert result.stderr.startswith("tfclassify: error: ") and result.stderr.count("\n") == 1, result.stderr


TOKEN = "http-client-token-5e0b7d2c91a4"


def test_a_token_over_http(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} fashion\n")
    proc = ServerProcess(model_repo, tmp_path, "--auth-tokens", str(tokens))
    try:
        with ClassifierClient(proc.http_url, retries=0) as anonymous, \
                ClassifierClient(proc.http_url, retries=0, token=TOKEN) as shop:
            wait_until(lambda: shop.is_server_ready(timeout=2), timeout=60, interval=0.2)
            assert error_of(lambda: anonymous.classify(IMAGE, "fashion")).code == grpc.StatusCode.UNAUTHENTICATED
            assert shop.classify(IMAGE, "fashion").classes.shape == (1,)
            assert error_of(lambda: shop.classify(IMAGE, "digits")).code == grpc.StatusCode.PERMISSION_DENIED
            assert shop.is_server_ready("fashion", timeout=5), "a model's readiness is asked with the token"
            assert error_of(lambda: anonymous.is_server_ready("fashion", timeout=5)).code == \
                grpc.StatusCode.UNAUTHENTICATED, "a refused token is said, not waited on"
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        listing = run_cli("models", "--server", proc.http_url, "--token-file", str(token_file))
        assert listing.returncode == 0 and "fashion" in listing.stdout, listing.stderr
    finally:
        assert proc.stop() == 0


def test_mutual_tls_over_https(model_repo, tmp_path):
    ca, other = Authority(tmp_path, "ca"), Authority(tmp_path, "other-ca")
    cert, key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    proc = ServerProcess(model_repo, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                         "--tls-client-ca", str(ca.pem))
    url = f"https://127.0.0.1:{proc.http_port}"
    try:
        trusted = ssl_context(ca.pem, client_cert, client_key)
        with ClassifierClient(url, retries=0, ssl_context=trusted) as client:
            wait_until(lambda: client.is_server_ready(timeout=2), timeout=60, interval=0.2)
            assert client.classify(IMAGE, "fashion").classes.shape == (1,)
        for context in (ssl_context(ca.pem), ssl_context(other.pem, client_cert, client_key)):
            with ClassifierClient(url, retries=0, timeout=5, ssl_context=context) as refused:
                assert error_of(lambda: refused.list_models()).code == grpc.StatusCode.UNAVAILABLE
        with ClassifierClient(f"http://127.0.0.1:{proc.http_port}", retries=0, timeout=5) as plain:
            assert error_of(lambda: plain.list_models()).code == grpc.StatusCode.UNAVAILABLE
        listing = run_cli("models", "--server", url, "--tls-ca", str(ca.pem), "--tls-cert", str(client_cert),
                          "--tls-key", str(client_key))
        assert listing.returncode == 0 and "fashion" in listing.stdout, listing.stderr
    finally:
        assert proc.stop() == 0


def test_http_options_are_checked(server):
    for bad in ("http://", "ftp://host:1", "http://host:1/?q=1", "http://user@host:1", "http://host:99999"):
        assert error_of(ClassifierClient, bad).code == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert error_of(lambda: ClassifierClient(server.http_url, ssl_context=ssl_context())).code == \
        grpc.StatusCode.INVALID_ARGUMENT, "TLS options with plain http://"
    assert error_of(lambda: ClassifierClient(server.http_url, credentials=grpc.ssl_channel_credentials())).code == \
        grpc.StatusCode.INVALID_ARGUMENT, "gRPC credentials over HTTP"
    assert error_of(lambda: ClassifierClient(server.address, ssl_context=ssl_context())).code == \
        grpc.StatusCode.INVALID_ARGUMENT, "an ssl_context for gRPC"

