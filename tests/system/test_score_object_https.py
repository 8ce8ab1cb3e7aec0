"""``tfclassify score --images https://...`` against a real HTTPS file server on loopback (``rclone serve webdav``
with a certificate of a test authority, trusted through ``SSL_CERT_FILE``) and a real tfclassify server: a zip
object read by ranges and a folder listed over WebDAV score exactly as the same local files do, and a
server whose certificate is not trusted is refused in one line (exit 5)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from archives import by_member, image_members, read_jsonl, write_tree, write_zip
from certificates import Authority
from conftest import FASHION_LABELS, tfclassify_cmd
from s3server import rclone_binary

N = 24


@pytest.fixture(scope="module")
def files(fashion_test, tmp_path_factory):
    """A class-folder tree of PNGs (one truncated) on disk, and the same tree and a zip of it served."""
    members = image_members(fashion_test.images[:N], fashion_test.labels[:N], FASHION_LABELS)
    tree = members + [("Shirt/truncated.png", members[0][1][:100])]
    local = write_tree(tmp_path_factory.mktemp("local") / "photos", tree)
    served = tmp_path_factory.mktemp("served")
    shutil.copytree(local, served / "photos")
    (served / "exports").mkdir()
    write_zip(served / "exports" / "photos.zip", tree)
    return local, served


@pytest.fixture(scope="module")
def https(files, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The base URL of ``rclone serve webdav`` over TLS, and the authority's certificate file."""
    folder = tmp_path_factory.mktemp("tls")
    authority = Authority(folder, "files-ca")
    cert, key = authority.issue("files", server=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "rclone.log", "wb")
    process = subprocess.Popen([rclone_binary(), "serve", "webdav", "--addr", f"127.0.0.1:{port}", "--cert", str(cert),
                                "--key", str(key), str(files[1])], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "RCLONE_CONFIG": os.devnull})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (folder / "rclone.log").read_text()
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", str(authority.pem)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def score(env: dict | None, *args: str, expect: int = 3) -> subprocess.CompletedProcess:
    result = subprocess.run(tfclassify_cmd("score", *args, "--no-progress"), capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_a_zip_and_a_folder_over_https_score_as_the_local_files(server, files, https, tmp_path):
    base, ca = https
    common = ("--server", server.address, "--model", "fashion", "--labels", "folder")
    score(None, *common, "--images", str(files[0]), "--output", str(tmp_path / "local.jsonl"))
    local = by_member(read_jsonl(tmp_path / "local.jsonl"))
    env = {**os.environ, "SSL_CERT_FILE": ca}
    for url, name in ((f"{base}/exports/photos.zip", "zip"), (f"{base}/photos/", "folder")):
        score(env, *common, "--images", url, "--output", str(tmp_path / f"{name}.jsonl"))
        assert by_member(read_jsonl(tmp_path / f"{name}.jsonl")) == local, name


def test_a_certificate_that_is_not_trusted_is_refused_in_one_line(server, https):
    base, _ = https
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    result = score(env, "--server", server.address, "--model", "fashion", "--images", f"{base}/exports/photos.zip",
                   expect=5)
    [line] = result.stderr.strip().splitlines()
    assert line == (f"tfclassify: error: {base}/exports/photos.zip: the server's TLS certificate is not trusted "
                    "(UnknownIssuer); a private authority's certificate goes in SSL_CERT_FILE (a PEM bundle)"), line
