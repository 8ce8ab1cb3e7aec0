"""Shared fixtures: real data, tiny trained models, real server processes on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from many_classes import many  # noqa: F401  (a fixture: the reports of 120 and 1,000 classes)

from tfclassify.client import ClassifierClient
from tfclassify.common.datasets import Dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def tfclassify_cmd(*args: str) -> list[str]:
    """The installed ``tfclassify`` console command with ``args``."""
    return [str(BIN / "tfclassify"), *args]


class ServerProcess:
    """``tfclassify serve`` in a child process, on free loopback ports."""

    def __init__(self, model_repo: Path, workdir: Path, *extra_args: str) -> None:
        self.port_file = workdir / "ports.json"
        self.log_path = workdir / "server.log"
        self.port_file.unlink(missing_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            tfclassify_cmd(
                "serve", "--model-repo", str(model_repo), "--host", "127.0.0.1", "--grpc-port", "0",
                "--http-port", "0", "--metrics-port", "0", "--port-file", str(self.port_file), *extra_args,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        ports = self._wait_for_port_file(timeout=120)
        self.grpc_port, self.http_port, self.metrics_port = ports["grpc_port"], ports["http_port"], ports["metrics_port"]
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"

    def _wait_for_port_file(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                return json.loads(self.port_file.read_text())
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def client(self, **kwargs) -> ClassifierClient:
        """A client that shows the server's own answers: no retries unless asked (they are tested on their own)."""
        return ClassifierClient(self.address, **{"retries": 0, **kwargs})

    def metrics_text(self) -> str:
        import urllib.request

        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:PORT/PATH``; error statuses are returned, not raised."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that have ``labels`` in Prometheus text output (0 when none): one
    sample's value when the labels name it fully."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def wait_until(predicate, timeout: float = 60, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def drain_and_check(proc: ServerProcess, model: str, big: np.ndarray, grace_s: float, requests: int = 12,
                    http: bool = False) -> None:
    """Send ``requests`` Classify calls of ``big`` (over gRPC, or over the HTTP/REST port); SIGTERM once the
    server holds them all; check that every one completes, the process exits 0 within ``grace_s`` and refuses
    new calls while it stops."""
    from tfclassify.client import TfclassifyError

    def received() -> tuple[float, float]:
        text = proc.metrics_text()
        in_flight = metric_value(text, "tfclassify_requests_in_flight", method="Classify")
        return in_flight, in_flight + metric_value(text, "tfclassify_requests_total", method="Classify")

    with ClassifierClient(proc.http_url, timeout=120, retries=0) if http else proc.client(timeout=120) as client:
        client.wait_for_ready(60)
        before = received()[1]
        futures = [client.classify_async(big, model) for _ in range(requests)]
        # A request counts once the server has received it: one still being uploaded when
        # shutdown starts is refused by gRPC itself (and retried by clients such as the scorer).
        wait_until(lambda: received()[1] - before == requests, interval=0.005)
        assert received()[0] >= requests // 2, "most requests must still be running when SIGTERM arrives"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]  # every accepted request completes
        assert [len(r) for r in results] == [len(big)] * requests
        assert proc.proc.wait(grace_s) == 0
        assert time.monotonic() - started < grace_s
        with pytest.raises(TfclassifyError) as info:
            client.classify(big[:1], model, timeout=2)
        assert info.value.code.name == "UNAVAILABLE"
    log = proc.log()
    assert "shutting down" in log and "stopped" in log


@pytest.fixture(scope="session")
def fashion_test() -> Dataset:
    return load_dataset("fashion_mnist", "test", FASHION_DIR, download_missing=False)


@pytest.fixture(scope="session")
def mnist_test() -> Dataset:
    return load_dataset("mnist", "test", MNIST_DIR, download_missing=False)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory, mnist_test) -> Path:
    """A repository with two real models:

    * ``fashion``: our trainer's 784-512-10 MLP (its tuned recipe: Adam, cosine decay), 3 epochs on 20,000
      Fashion-MNIST images
      (through the ``tfclassify train`` command);
    * ``digits``: a plain Keras ``Model.export()`` taking float ``[N, 784]``
      and returning logits, with no label file, trained on the first half of
      the MNIST test set.
    """
    repo = tmp_path_factory.mktemp("repo")
    subprocess.run(
        tfclassify_cmd(
            "train", "--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR), "--model-repo", str(repo),
            "--name", "fashion", "--epochs", "3", "--train-limit", "20000", "--recipe", "tuned",
        ),
        check=True,
    )
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "make_plain_keras_model.py"), str(MNIST_DIR), str(repo / "digits" / "1")],
        check=True,
    )
    return repo


@pytest.fixture(scope="session")
def colour_repo(tmp_path_factory) -> Path:
    """A repository of the colour models ``tests/make_colour_models.py`` builds (their answers in process in
    ``answers.npz`` beside it, not in it), MobileNetV3's 0..255 input scale declared as its users would."""
    folder = tmp_path_factory.mktemp("colour")
    repo = folder / "repo"
    subprocess.run([sys.executable, str(ROOT / "tests" / "make_colour_models.py"), str(repo)], check=True,
                   capture_output=True)
    (repo / "answers.npz").rename(folder / "answers.npz")
    (repo / "mobilenet" / "1" / "tfclassify.json").write_text(json.dumps({"input_scale": 1.0}))
    return repo


@pytest.fixture(scope="session")
def server(model_repo, tmp_path_factory) -> Iterator[ServerProcess]:
    """One server for the whole session, serving ``model_repo``."""
    proc = ServerProcess(model_repo, tmp_path_factory.mktemp("server"), "--max-images-per-request", "4096")
    with proc.client() as client:
        client.wait_for_ready(60)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture()
def client(server) -> Iterator[ClassifierClient]:
    with server.client() as c:
        yield c


def readme_example(name: str, address: str, model: str) -> str:
    """The README's Python example marked ``<!-- example: name ... -->``, pointed at ``address`` and ``model``
    (the README uses ``localhost:8500`` and ``fashion_mnist``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.index(f"<!-- example: {name} ")
    start = text.index("```python\n", marker) + len("```python\n")
    code = text[start : text.index("```", start)]
    assert "localhost:8500" in code and '"fashion_mnist"' in code
    return code.replace("localhost:8500", address).replace('"fashion_mnist"', f'"{model}"')


def accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(true)))


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
