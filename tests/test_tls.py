"""TLS and mutual TLS on the gRPC port, with certificates this test makes (the ``cryptography`` package):
a plain-text client is refused, an untrusted client certificate is refused, a trusted one works, and a
certificate rotated in place is served on new connections without a restart. The CLI speaks TLS too."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ServerProcess, http_get, tfclassify_cmd, wait_until
from tfclassify.client import ClassifierClient, TfclassifyError
from tfclassify.client.tls import channel_credentials

IMAGE = np.zeros((1, 28, 28), np.uint8)


class Authority:
    """A certificate authority that signs server and client certificates into PEM files."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = folder / f"{name}.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        issuer = subject if not hasattr(self, "certificate") else self.certificate.subject
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def issue(self, name: str, server: bool) -> tuple[Path, Path]:
        """A certificate for ``name`` (a server for 127.0.0.1 and localhost, or a client) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def works(address: str, **tls) -> bool:
    """Whether a new connection with these credentials gets a classification."""
    try:
        with ClassifierClient(address, timeout=5, credentials=channel_credentials(**tls) if tls else None) as client:
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
        assert proc.proc.poll() is None, "no restart"
    finally:
        assert proc.stop() == 0
    assert "TLS certificate reloaded" in proc.log() and "HTTP TLS certificate reloaded" in proc.log()


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
