"""What an operator trips over, fixed: stray folders, an empty repository, the HTTP port's paths,
process metrics, ports already in use or held by another server, a client pointed at the HTTP port, and
TensorFlow's start-up noise."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, http_get, metric_value, tfclassify_cmd

from tfclassify.client import ClassifierClient, TfclassifyError
from tfclassify.client.aio import ClassifierClient as AsyncClient


@pytest.fixture()
def messy_repo(model_repo, tmp_path):
    """A repository as a fresh volume looks: the model, lost+found, a README and a folder without versions."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "fashion", repo / "fashion")
    (repo / "lost+found").mkdir()
    (repo / "README.md").write_text("models live here\n")
    (repo / "notes" / "draft").mkdir(parents=True)
    (repo / ".snapshot").mkdir()
    return repo


def test_stray_folders_are_ignored_listed_and_warned_about_once(messy_repo, tmp_path):
    proc = ServerProcess(messy_repo, tmp_path, "--poll-interval-s", "0.2")
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
            status = client.get_repository_status()
        assert [(v.name, v.state) for v in status.versions] == [("fashion", "AVAILABLE")]
        assert status.ignored_folders == (
            ("README.md", "a file, not a model folder"),
            ("lost+found", "no version folder (<model>/<integer>/saved_model.pb)"),
            ("notes", "no version folder (<model>/<integer>/saved_model.pb)"),
        ), "hidden folders are not listed"
        listing = subprocess.run(tfclassify_cmd("models", "--status", "--server", proc.address),
                                 capture_output=True, text=True, check=True).stdout
        assert "lost+found" in listing and "IGNORED" in listing
        time.sleep(1.0)  # several polls
    finally:
        proc.stop()
    log = proc.log()
    assert log.count("not serving 3 folder(s) of the model repository") == 1, log


def test_an_empty_repository_is_not_ready_and_says_why_once(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = ServerProcess(tmp_path / "empty", tmp_path, "--poll-interval-s", "0.2")
    try:
        time.sleep(1.5)
        with proc.client() as client:
            assert not client.is_server_ready()
            assert client.is_server_ready("liveness"), "the liveness service is SERVING: no restart loop"
        code, body = http_get(proc.metrics_port, "/readyz")
        assert code == 503 and "no model to serve in" in body
        assert http_get(proc.metrics_port, "/healthz") == (200, "ok\n"), "alive, only not ready: no restart loop"
    finally:
        proc.stop()
    assert proc.log().count("WARNING tfclassify.server.app: not ready: no model to serve") == 1, proc.log()


def test_the_http_port_serves_metrics_and_probes_only(server):
    code, text = http_get(server.metrics_port, "/metrics")
    assert code == 200 and metric_value(text, "process_resident_memory_bytes") > 50e6
    assert metric_value(text, "process_open_fds") > 0 and 'python_info{' in text
    assert "_created" not in text, "no *_created series"
    assert http_get(server.metrics_port, "/healthz") == (200, "ok\n")
    assert http_get(server.metrics_port, "/readyz") == (200, "ready\n")
    for path in ("/", "/metric", "/metrics/extra", "/healthz/"):
        code, body = http_get(server.metrics_port, path)
        assert code == 404 and "/metrics, /healthz and /readyz" in body, path


@pytest.mark.parametrize(("flag", "name"), [("--grpc-port", "gRPC"), ("--http-port", "HTTP/REST"),
                                            ("--metrics-port", "metrics")])
def test_a_port_in_use_is_one_line_and_exit_1(model_repo, flag, name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--grpc-port": "0", "--http-port": "0", "--metrics-port": "0", flag: str(port)}
        result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(model_repo), "--host", "127.0.0.1",
                                               *(item for pair in ports.items() for item in pair)),
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tfclassify: error: cannot listen on 127.0.0.1:{port} for {name}: address already in use "
        f"(choose another port with {flag})"
    )
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr


@pytest.fixture(params=["our server", "a SO_REUSEPORT socket"])
def busy_grpc_port(request, server):
    """A gRPC port another program listens on: our session server, or a socket that allows sharing the port
    (SO_REUSEPORT, as gRPC's default and our --workers set it)."""
    if request.param == "our server":
        yield server.grpc_port
        return
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_server_on_a_busy_grpc_port_exits_1_naming_it(model_repo, server, busy_grpc_port, workers):
    result = subprocess.run(
        tfclassify_cmd("serve", "--model-repo", str(model_repo), "--host", "127.0.0.1", "--grpc-port",
                       str(busy_grpc_port), "--http-port", "0", "--metrics-port", "0", "--workers", workers),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tfclassify: error: cannot listen on 127.0.0.1:{busy_grpc_port} for gRPC: address already in use "
        "(choose another port with --grpc-port)"
    ]
    with server.client() as client:  # the first server still has its port to itself
        assert {m.name for m in client.list_models()} == {"digits", "fashion"}


def served_log(repo, workdir, *args: str) -> str:
    """The log of a server that started on ``repo``, became ready and stopped."""
    workdir.mkdir()
    proc = ServerProcess(repo, workdir, *args)
    try:
        with proc.client() as client:
            client.wait_for_ready(60)
    finally:
        proc.stop()
    return proc.log()


def test_tensorflow_start_up_noise_is_filtered_and_json_logs_parse(model_repo, tmp_path):
    quiet = served_log(model_repo, tmp_path / "quiet", "--log-format", "json")
    entries = [json.loads(line) for line in quiet.splitlines() if line.strip()]  # every line is a JSON object
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any("available on /device:CPU:0" in e["message"] for e in entries)
    for noise in ("cuInit", "oneDNN", "absl::InitializeLog", "Could not find cuda drivers"):
        assert noise not in quiet, noise
    loud = served_log(model_repo, tmp_path / "loud", "--log-level", "DEBUG", "--memory-trim-interval-s", "0.05")
    # Which notices TensorFlow prints depends on the CPU (oneDNN's only on some); the absl one always comes.
    assert "All log messages before absl::InitializeLog() is called" in loud, "DEBUG shows TensorFlow's notices"
    assert re.search(r"heap trimmed: resident \d+\.\d -> \d+\.\d MiB", loud), "the freed heap is given back as it runs"


def test_a_client_pointed_at_the_metrics_port_is_told_the_grpc_port(server):
    address = f"127.0.0.1:{server.metrics_port}"
    expected = (f"{address} answers HTTP/1, not gRPC: it is a tfclassify server's metrics/HTTP port, and that server "
                f"listens for gRPC on port {server.grpc_port} (try 127.0.0.1:{server.grpc_port}, unless a proxy or "
                "port mapping publishes it elsewhere)")
    with ClassifierClient(address, retries=0) as client:
        with pytest.raises(TfclassifyError) as info:
            client.list_models()
        assert (info.value.code, info.value.details) == (grpc.StatusCode.UNAVAILABLE, expected)
        with pytest.raises(TfclassifyError) as info:  # no waiting would help: said at once
            client.wait_for_ready(30)
        assert info.value.details == expected

    async def with_asyncio() -> str:
        async with AsyncClient(address, retries=0) as client:
            with pytest.raises(TfclassifyError) as info:
                await client.classify(np.zeros((1, 28, 28), np.uint8), "fashion")
            return info.value.details

    assert asyncio.run(with_asyncio()) == expected
    for command in (("models",), ("health", "--wait", "30")):
        result = subprocess.run(tfclassify_cmd(*command, "--server", address), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1 and expected in result.stderr and len(result.stderr.splitlines()) == 1, result


def test_a_client_pointed_at_another_http_server_is_told_it_is_not_grpc():
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{other.server_address[1]}"
        with ClassifierClient(address, retries=0) as client, pytest.raises(TfclassifyError) as info:
            client.list_models(timeout=10)
        other.shutdown()
    assert info.value.details == (f"{address} answers HTTP/1, not gRPC: it looks like an HTTP port (a tfclassify "
                                  "server's metrics port is 8502 by default); give the server's gRPC port (8500 by "
                                  "default)")
