"""The HTTP transport of ``ClassifierClient`` against a scripted stdlib HTTP server on loopback: what it sends
(protobuf, the token, ``Request-Timeout``), how answers map back to ``TfclassifyError``, retries of refused calls,
keep-alive connections the server closed, and the local deadline."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from tfclassify.client import ClassifierClient, TfclassifyError
from tfclassify.v1 import classifier_pb2 as pb

MODELS = pb.ListModelsResponse(models=[pb.ModelMetadata(model_spec=pb.ModelSpec(name="m", version=3))])


class Scripted(http.server.ThreadingHTTPServer):
    """Answers each request with the next of ``script`` (status, body, delay s, close after); records requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[tuple[int, bytes, float, bool]] = []
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        #: The client end (address, port) of each connection: an id() of a closed socket can be reused.
        self.connections: set[tuple[str, int]] = set()

    def handle_error(self, request, client_address) -> None:
        pass  # a client gone after its deadline: expected here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Scripted

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.path, dict(self.headers), body))
        self.server.connections.add(self.client_address)
        status, answer, delay, close = self.server.script.pop(0) if self.server.script else (200, b"", 0.0, False)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("Content-Type", "application/x-protobuf" if status == 200 else "application/json")
        self.end_headers()
        self.wfile.write(answer)
        if close:  # silently, as a server closing an idle keep-alive connection
            self.close_connection = True

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def error(code: str, message: str) -> bytes:
    return json.dumps({"error": message, "code": code}).encode()


def test_sends_the_message_as_protobuf_with_the_token_and_the_deadline(scripted):
    scripted.script = [(200, MODELS.SerializeToString(), 0.0, False)] * 2
    with ClassifierClient(scripted.url + "/prefix/", token="secret", timeout=7.5) as client:
        assert [(m.name, m.version) for m in client.list_models()] == [("m", 3)]
        client.list_models()
    path, headers, body = scripted.seen[0]
    assert path == "/prefix/tfclassify.v1.Classifier/ListModels"
    assert pb.ListModelsRequest.FromString(body) == pb.ListModelsRequest()
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Authorization"] == "Bearer secret"
    assert 7.0 < float(headers["Request-Timeout"]) <= 7.5
    assert len(scripted.connections) == 1, "one keep-alive connection for calls on one thread"


def test_errors_carry_the_code_and_message_of_the_error_json(scripted):
    scripted.script = [(404, error("NOT_FOUND", "model 'x' not found"), 0.0, False),
                       (400, error("FAILED_PRECONDITION", "not now"), 0.0, False),
                       (502, b"<html>bad gateway</html>", 0.0, False)]
    with ClassifierClient(scripted.url, retries=0) as client:
        for code, details in ((grpc.StatusCode.NOT_FOUND, "model 'x' not found"),
                              (grpc.StatusCode.FAILED_PRECONDITION, "not now"),
                              (grpc.StatusCode.UNAVAILABLE, "HTTP 502: <html>bad gateway</html>")):
            with pytest.raises(TfclassifyError) as caught:
                client.get_model_metadata("x")
            assert (caught.value.code, caught.value.details) == (code, details)


def test_refused_calls_are_retried_but_feedback_is_not(scripted):
    busy = (429, error("RESOURCE_EXHAUSTED", "busy"), 0.0, False)
    down = (503, error("UNAVAILABLE", "draining"), 0.0, False)
    scripted.script = [busy, down, (200, MODELS.SerializeToString(), 0.0, False)]
    with ClassifierClient(scripted.url, retries=2) as client:
        assert len(client.list_models()) == 1
        assert len(scripted.seen) == 3
        scripted.script = [down, down]
        with pytest.raises(TfclassifyError) as caught:
            client.feedback("m", "r", [1])
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and len(scripted.seen) == 4
    with ClassifierClient(scripted.url, retries=0) as once:
        scripted.script = [busy]
        with pytest.raises(TfclassifyError):
            once.list_models()
        assert len(scripted.seen) == 5


def test_a_keep_alive_connection_the_server_closed_is_replaced(scripted):
    scripted.script = [(200, MODELS.SerializeToString(), 0.0, True), (200, b"", 0.0, False)]
    with ClassifierClient(scripted.url, retries=0) as client:
        client.list_models()
        time.sleep(0.1)
        assert client.feedback("m", "r", [1]).labelled == 0, "sent again on a new connection"
    assert len(scripted.seen) == 2 and len(scripted.connections) == 2


def test_the_deadline_is_enforced_here_too(scripted):
    scripted.script = [(200, MODELS.SerializeToString(), 2.0, False), (200, MODELS.SerializeToString(), 0.0, False)]
    with ClassifierClient(scripted.url, retries=0) as client:
        started = time.monotonic()
        with pytest.raises(TfclassifyError) as caught:
            client.list_models(timeout=0.3)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.5
        assert len(client.list_models(timeout=5)) == 1, "a new connection for the next call"


def test_readiness_falls_back_to_list_models_without_the_v2_routes(scripted):
    scripted.script = [(200, b"", 0.0, False)]
    with ClassifierClient(scripted.url) as client:
        assert client.is_server_ready()
        assert scripted.seen[-1][0] == "/v2/health/ready"
        scripted.script = [(404, error("NOT_FOUND", "no route"), 0.0, False), (200, MODELS.SerializeToString(), 0, False)]
        assert client.is_server_ready()
        assert scripted.seen[-1][0] == "/tfclassify.v1.Classifier/ListModels"
        scripted.script = [(503, error("UNAVAILABLE", "starting"), 0.0, False)]
        assert not client.is_server_ready()
