"""``python -m bench.split`` (``make bench-split``): whole worker processes, or front ends and one inference
process? The design question of ``--workers``, measured on this machine.

Two ways to serve from several processes:

- **whole workers** (what ``tfclassify serve --workers N`` does): N servers on one port, each with its own
  TensorFlow, queues and event loop;
- **front ends + one inference process**: N servers that answer gRPC and form batches, but hand every
  TensorFlow call over a Unix socket to one process that holds the models (on a GPU: one context, one
  copy of the weights). Here the front ends are the product's own server with ``ModelRuntime.run``
  replaced by that hand-off, so queues, batching and responses are the real ones.

For each layout, in interleaved rounds: single-image ``Classify`` from 64 callers (``bench.load``), one
caller's p50, ``tfclassify score`` on the 60,000 training images, and the mean TensorFlow call as the
server's batcher saw it (``tfclassify_inference_duration_seconds``: in the split layout it includes the
hand-off). Trains the benchmark model unless --model-repo names a repository holding ``fashion_mnist``.

Usage: python -m bench.split [--model-repo DIR] [--fronts 2] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

import numpy as np

from bench.__main__ import BIN, MODEL, _json_of, histogram_totals, train_model
from tfclassify.client import ClassifierClient

# -- the inference process ------------------------------------------------------------------------------------


def serve_inference(address: str) -> None:
    """Answer ``(path, model, version, images)`` with the version's ``run`` outputs, one thread per connection
    (each front-end inference thread has its own), so calls from several front ends run at once."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from tfclassify.server.runtime.model_runtime import load_runtime
    from tfclassify.server.runtime.repository import VersionDir

    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    runtimes: dict[str, object] = {}
    loading = threading.Lock()

    def runtime_of(path: str, model: str, version: int):
        with loading:
            if path not in runtimes:
                runtimes[path] = load_runtime(VersionDir(model, version, Path(path)), device)
            return runtimes[path]

    def answer(conn: Connection) -> None:
        with conn:
            while True:
                try:
                    path, model, version, images = conn.recv()
                except EOFError:
                    return
                try:
                    conn.send(runtime_of(path, model, version).run(images))
                except Exception as exc:  # noqa: BLE001 - the front end raises it where TensorFlow would have
                    conn.send(exc)

    with Listener(address, family="AF_UNIX") as listener:
        while True:
            threading.Thread(target=answer, args=(listener.accept(),), daemon=True).start()


# -- a front end ----------------------------------------------------------------------------------------------


def serve_front_end(address: str, serve_args: list[str]) -> int:
    """``tfclassify serve`` whose TensorFlow calls go to the inference process at ``address``."""
    from tfclassify.client.cli import main as cli_main
    from tfclassify.server.runtime.model_runtime import ModelRuntime

    local = threading.local()

    def run_remotely(self: ModelRuntime, images):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = Client(address, family="AF_UNIX")
        conn.send((self.path, self.name, self.version, images))
        reply = conn.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    ModelRuntime.run = run_remotely
    return cli_main(["serve", *serve_args])


# -- the measurement ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Layout:
    """Processes serving one gRPC port in one of the layouts; ``metrics_ports`` of every server process."""

    def __init__(self, repo: Path, tmp: Path, workers: int, fronts: int) -> None:
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        common = ["--model-repo", str(repo), "--host", "127.0.0.1", "--grpc-port", str(self.port),
                  "--http-port", "0", "--metrics-port", "0", "--log-level", "WARNING"]
        port_files = []
        if fronts == 0:
            port_files.append(tmp / "ports.json")
            self.procs.append(subprocess.Popen([str(BIN / "tfclassify"), "serve", *common, "--workers", str(workers),
                                                "--port-file", str(port_files[0])]))
        else:
            sock = str(tmp / "inference.sock")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "bench.split", "inference", sock]))
            _wait(lambda: os.path.exists(sock), self.procs)
            for i in range(fronts):
                port_files.append(tmp / f"ports-{i}.json")
                # The front ends load each version only for its metadata: they never see a GPU.
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.split", "front-end", sock, "--", *common, "--device", "cpu",
                     "--port-file", str(port_files[-1])], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}))
        _wait(lambda: all(p.exists() for p in port_files), self.procs)
        self.metrics_ports = [json.loads(p.read_text())["metrics_port"] for p in port_files]
        with ClassifierClient(self.address) as client:
            client.wait_for_ready(120)

    def inference_seconds(self) -> tuple[float, float]:
        """(sum, count) of ``tfclassify_inference_duration_seconds`` over the server processes."""
        totals = [histogram_totals(port, "tfclassify_inference_duration_seconds") for port in self.metrics_ports]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            proc.wait(60)


def _wait(ready, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit("bench.split: a server process did not start")
        time.sleep(0.05)


def answers(layout: Layout) -> list[int]:
    """The classes the layout gives 512 fixed images: every layout must give the same."""
    images = np.random.default_rng(0).integers(0, 256, (512, 28, 28), dtype=np.uint8)
    with ClassifierClient(layout.address) as client:
        return [int(c) for c in client.classify(images, MODEL).classes]


def measure(layout: Layout, seconds: float) -> dict:
    load = [sys.executable, "-m", "bench.load", layout.address, MODEL, "--seconds", str(seconds)]
    before = layout.inference_seconds()
    c64 = _json_of([*load, "--concurrency", "64"])
    after = layout.inference_seconds()
    c1 = _json_of([*load, "--concurrency", "1"])
    out = subprocess.run([str(BIN / "tfclassify"), "score", "--server", layout.address, "--model", MODEL,
                          "--dataset", "fashion_mnist", "--split", "train", "--no-progress"],
                         check=True, capture_output=True, text=True).stdout
    calls = after[1] - before[1]
    return {"c64": c64["requests_per_second"], "c64_p99_ms": c64["p99_ms"], "c64_errors": c64["errors"],
            "c1_p50_ms": c1["p50_ms"], "score": float(re.search(r"([\d,]+) images/s", out).group(1).replace(",", "")),
            "tf_call_ms": (after[0] - before[0]) / calls * 1e3 if calls else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help=f"a repository holding {MODEL} (default: train one)")
    parser.add_argument("--fronts", type=int, default=2, help="processes in the multi-process layouts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per load run")
    args = parser.parse_args()
    n = args.fronts
    layouts = {"1 process": (1, 0), f"--workers {n}": (n, 0), "1 front end + inference": (0, 1),
               f"{n} front ends + inference": (0, n)}
    results: dict[str, list[dict]] = {name: [] for name in layouts}
    expected: list[int] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.model_repo
        if repo is None:
            repo = Path(tmp) / "models"
            train_model(repo)
        for round_ in range(args.rounds):
            for name, (workers, fronts) in layouts.items():
                folder = Path(tmp) / f"{round_}-{workers}-{fronts}"
                folder.mkdir()
                layout = Layout(repo, folder, workers, fronts)
                try:
                    classes = answers(layout)
                    expected = expected or classes
                    if classes != expected:
                        raise SystemExit(f"bench.split: {name} answered other classes than the first layout")
                    results[name].append(measure(layout, args.seconds))
                finally:
                    layout.stop()
                print(f"round {round_ + 1}, {name}: {json.dumps(results[name][-1])}", file=sys.stderr)
    print(table(results))
    return 0


def table(results: dict[str, list[dict]]) -> str:
    def each(runs: list[dict], key: str, fmt: str) -> str:
        return " / ".join(format(r[key], fmt) for r in runs)

    rows = [("layout", "64 callers req/s", "p99 ms", "1 caller p50 ms", "score images/s", "TF call ms (64 callers)")]
    for name, runs in results.items():
        rows.append((name, each(runs, "c64", ",.0f"), each(runs, "c64_p99_ms", ".1f"), each(runs, "c1_p50_ms", ".2f"),
                     each(runs, "score", ",.0f"), each(runs, "tf_call_ms", ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n(one value per round, in order; rounds interleave the layouts)"


if __name__ == "__main__":
    if sys.argv[1:2] == ["inference"]:
        serve_inference(sys.argv[2])
    elif sys.argv[1:2] == ["front-end"]:
        sys.exit(serve_front_end(sys.argv[2], sys.argv[sys.argv.index("--") + 1:]))
    else:
        sys.exit(main())
