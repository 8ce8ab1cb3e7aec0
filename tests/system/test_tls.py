"""TLS and mutual TLS on the gRPC port (and the HTTP/REST port, which follows it), with certificates this test makes (the ``cryptography`` package):
a plain-text client is refused, an untrusted client certificate is refused, a trusted one works, and a
certificate rotated in place is served on new connections without a restart. The CLI speaks TLS too."""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from certificates import Authority
from conftest import ServerProcess, http_get, tfclassify_cmd, wait_until

from tfclassify.client import ClassifierClient, TfclassifyError
from tfclassify.client.tls import channel_credentials

IMAGE = np.zeros((1, 28, 28), np.uint8)


def works(address: str, **tls) -> bool:
    """Whether a new connection with these credentials gets a classification."""
    try:
        with ClassifierClient(address, timeout=5, retries=0,
                              credentials=channel_credentials(**tls) if tls else None) as client:
            return len(client.classify(IMAGE, "fashion").classes) == 1
    except TfclassifyError as exc:
        assert exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc
        return False


def https_status(port: int, path: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> int | str:
    """The status of ``GET https://127.0.0.1:PORT/PATH`` trusting ``ca`` (with a client certificate if given),
    or the reason the connection failed."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
        return type(getattr(exc, "reason", exc)).__name__


def plain_http_fails(port: int) -> bool:
    try:
        http_get(port, "/metrics", timeout=5)
    except (urllib.error.URLError, ConnectionError, OSError):
        return True
    return False


@pytest.fixture()
def authorities(tmp_path):
    return Authority(tmp_path, "ca"), Authority(tmp_path, "other-ca")


def test_tls_refuses_plain_text_and_serves_clients_that_trust_its_ca(model_repo, tmp_path, authorities):
    ca, other = authorities
    cert, key = ca.issue("server", server=True)
    proc = ServerProcess(model_repo, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), "--metrics-tls", "tls")
    try:
        wait_until(lambda: works(proc.address, ca=ca.pem), timeout=60, interval=0.5)
        assert not works(proc.address), "a plain-text client is refused"
        # The HTTP port speaks HTTPS only, and a plain-HTTP client does not stop it serving others.
        assert plain_http_fails(proc.metrics_port)
        assert https_status(proc.metrics_port, "/metrics", ca.pem) == 200
        assert https_status(proc.metrics_port, "/readyz", ca.pem) == 200
        assert https_status(proc.metrics_port, "/metrics", other.pem) == "SSLCertVerificationError"
        # The HTTP/REST port follows the gRPC port's TLS, with no flag of its own.
        assert plain_http_fails(proc.http_port)
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem) == 200
        assert https_status(proc.http_port, "/v2/health/ready", other.pem) == "SSLCertVerificationError"
        assert not works(proc.address, ca=other.pem), "a client that does not trust the server's CA refuses it"
        health = subprocess.run(tfclassify_cmd("health", "--server", proc.address, "--tls-ca", str(ca.pem)),
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0 and "SERVING" in health.stdout, health.stderr
    finally:
        assert proc.stop() == 0


def test_mutual_tls_admits_only_clients_with_a_trusted_certificate(model_repo, tmp_path, authorities):
    ca, other = authorities
    cert, key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    stranger_cert, stranger_key = other.issue("stranger", server=False)
    proc = ServerProcess(model_repo, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                         "--tls-client-ca", str(ca.pem), "--metrics-tls", "mtls")
    try:
        wait_until(lambda: works(proc.address, ca=ca.pem, cert=client_cert, key=client_key), timeout=60, interval=0.5)
        assert https_status(proc.metrics_port, "/metrics", ca.pem, client_cert, client_key) == 200
        assert https_status(proc.metrics_port, "/metrics", ca.pem) != 200, "no client certificate"
        assert https_status(proc.metrics_port, "/metrics", ca.pem, stranger_cert, stranger_key) != 200
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, client_cert, client_key) == 200
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem) != 200, "no client certificate"
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, stranger_cert, stranger_key) != 200
        assert not works(proc.address, ca=ca.pem), "no client certificate"
        assert not works(proc.address, ca=ca.pem, cert=stranger_cert, key=stranger_key), "an untrusted one"
        assert not works(proc.address)
        score = subprocess.run(
            tfclassify_cmd("score", "--server", proc.address, "--model", "fashion", "--dataset", "fashion_mnist",
                           "--data-dir", "/usr/share/datasets/fashion-mnist", "--limit", "100", "--no-progress",
                           "--tls-ca", str(ca.pem), "--tls-cert", str(client_cert), "--tls-key", str(client_key)),
            capture_output=True, text=True, timeout=120)
        assert score.returncode == 0, score.stderr
    finally:
        assert proc.stop() == 0


def test_a_certificate_rotated_in_place_is_served_without_a_restart(model_repo, tmp_path, authorities):
    ca, new_ca = authorities
    cert, key = ca.issue("server", server=True)
    proc = ServerProcess(model_repo, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), "--metrics-tls", "tls")
    try:
        wait_until(lambda: works(proc.address, ca=ca.pem), timeout=60, interval=0.5)
        assert not works(proc.address, ca=new_ca.pem)
        assert https_status(proc.metrics_port, "/metrics", ca.pem) == 200
        # What cert-manager does: the same files, new contents (written aside, then renamed over).
        new_cert, new_key = new_ca.issue("server-rotated", server=True)
        for source, target in ((new_key, key), (new_cert, cert)):
            os.replace(source, target)
        wait_until(lambda: works(proc.address, ca=new_ca.pem), timeout=30, interval=0.5)
        assert not works(proc.address, ca=ca.pem), "new connections get the new certificate"
        assert https_status(proc.metrics_port, "/metrics", new_ca.pem) == 200, "on the HTTP port too"
        assert https_status(proc.metrics_port, "/metrics", ca.pem) == "SSLCertVerificationError"
        assert https_status(proc.http_port, "/v2/health/ready", new_ca.pem) == 200, "on the HTTP/REST port too"
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem) == "SSLCertVerificationError"
        assert proc.proc.poll() is None, "no restart"
    finally:
        assert proc.stop() == 0
    assert "TLS certificate reloaded" in proc.log() and "HTTP TLS certificate reloaded" in proc.log()


def test_a_client_ca_rotated_in_place_admits_only_the_new_clients(model_repo, tmp_path, authorities):
    ca, new_ca = authorities
    cert, key = ca.issue("server", server=True)
    old_cert, old_key = ca.issue("old-client", server=False)
    new_cert, new_key = new_ca.issue("new-client", server=False)
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(ca.pem.read_bytes())
    proc = ServerProcess(model_repo, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                         "--tls-client-ca", str(client_ca))
    try:
        wait_until(lambda: works(proc.address, ca=ca.pem, cert=old_cert, key=old_key), timeout=60, interval=0.5)
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, old_cert, old_key) == 200
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, new_cert, new_key) != 200
        tmp = tmp_path / "client-ca.new"
        tmp.write_bytes(new_ca.pem.read_bytes())
        os.replace(tmp, client_ca)  # the clients' CA rotated: new connections must present the new CA's certificates
        wait_until(lambda: works(proc.address, ca=ca.pem, cert=new_cert, key=new_key), timeout=30, interval=0.5)
        assert not works(proc.address, ca=ca.pem, cert=old_cert, key=old_key)
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, new_cert, new_key) == 200
        assert https_status(proc.http_port, "/v2/health/ready", ca.pem, old_cert, old_key) != 200, \
            "no TLS session of the old CA's client outlives the rotation"
    finally:
        assert proc.stop() == 0


def test_tls_options_are_checked_before_starting(model_repo, tmp_path, authorities):
    ca, _ = authorities
    cert, key = ca.issue("server", server=True)
    for args, message in ((["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
                          (["--tls-client-ca", str(ca.pem)], "needs --tls-cert and --tls-key"),
                          (["--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.key")], "nope.key: no such file"),
                          (["--metrics-tls", "tls"], "--metrics-tls tls needs --tls-cert and --tls-key"),
                          (["--metrics-tls", "yes"], "--metrics-tls must be off, tls or mtls"),
                          (["--tls-cert", str(cert), "--tls-key", str(key), "--metrics-tls", "mtls"],
                           "--metrics-tls mtls needs --tls-client-ca")):
        result = subprocess.run(tfclassify_cmd("serve", "--model-repo", str(model_repo), *args),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
