"""``tfclassify serve --workers N``: N server processes on one gRPC port, seen from outside as one server.

Each worker is a whole ``tfclassify serve`` (its own TensorFlow, queues and event loop) bound to the same
gRPC port: the kernel spreads connections over them (SO_REUSEPORT, which gRPC sets), so a machine's cores
all serve. The supervisor, the process the operator started, spawns them and:

* serves the HTTP port: ``/metrics`` with every worker's series added up (``merge_metrics``), ``/readyz``
  ready only when every worker is, ``/healthz`` while it runs;
* keeps a readiness board, one byte per worker in a shared file: each worker writes its own and reports
  its gRPC health SERVING only when every byte is set, so a probe answered by any worker tells the truth;
* restarts a worker that dies (clearing its byte first), with a growing pause if it keeps dying;
* on SIGTERM or SIGINT forwards SIGTERM to every worker (each drains its in-flight requests) and exits 0
  when all exited 0.

It imports no TensorFlow. Workers find their place from ``TFCLASSIFY_WORKER_*`` variables.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tfclassify.server.http import Heartbeat, make_app, start_http_server
from tfclassify.server.ports import BindError, bind_message, reserve_port, write_port_file
from tfclassify.server.settings import ServerSettings
from tfclassify.server.tls import http_tls

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "TFCLASSIFY_WORKER_INDEX"
WORKER_COUNT_ENV = "TFCLASSIFY_WORKER_COUNT"
WORKER_DIR_ENV = "TFCLASSIFY_WORKER_DIR"
READY_FILE = "ready"
#: Families that hold the same value in every worker (the state of a model version, the build): the maximum.
SAME_IN_EVERY_WORKER = {"tfclassify_model_version_state", "tfclassify_model_load_duration_seconds", "tfclassify_build"}
#: Families about one process (memory, CPU, the garbage collector, its polls of a bucket repository): kept per
#: worker, with a ``worker`` label.
PER_PROCESS_PREFIXES = ("process_", "python_", "tfclassify_model_repository_")
#: Pauses before restarting a worker that died, growing while it keeps dying soon after its start.
RESTART_PAUSES_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class ReadinessBoard:
    """One byte per worker in a file every worker maps: 1 while that worker is ready to serve."""

    def __init__(self, path: Path, workers: int) -> None:
        if not path.exists() or path.stat().st_size != workers:
            path.write_bytes(bytes(workers))
        self._file = open(path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), workers)
        self.workers = workers

    def set(self, index: int, ready: bool) -> None:
        self._map[index] = 1 if ready else 0

    def not_ready(self) -> list[int]:
        """The workers that are not ready."""
        return [i for i in range(self.workers) if not self._map[i]]

    def close(self) -> None:
        self._map.close()
        self._file.close()


@dataclass(frozen=True)
class WorkerPlace:
    """Where a worker process stands: its index among ``count`` workers and the supervisor's folder."""

    index: int
    count: int
    folder: Path

    @classmethod
    def from_environment(cls) -> WorkerPlace | None:
        """The place the supervisor gave this process, or None in a server started on its own."""
        if WORKER_INDEX_ENV not in os.environ:
            return None
        return cls(int(os.environ[WORKER_INDEX_ENV]), int(os.environ[WORKER_COUNT_ENV]), Path(os.environ[WORKER_DIR_ENV]))

    def board(self) -> ReadinessBoard:
        return ReadinessBoard(self.folder / READY_FILE, self.count)


def merge_metrics(scrapes: Iterable[tuple[int, str]]) -> list[Metric]:
    """The metric families of several workers' ``/metrics`` texts ``(worker index, text)`` as one server's:
    series with the same labels added up (counters, histograms, queue gauges), the maximum for what every
    worker holds alike (``SAME_IN_EVERY_WORKER``), and per-process families kept apart by a ``worker`` label."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple, float]] = {}
    for index, text in scrapes:
        for family in text_string_to_metric_families(text):
            out = merged.get(family.name)
            if out is None:
                out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            per_process = family.name.startswith(PER_PROCESS_PREFIXES)
            same = family.name in SAME_IN_EVERY_WORKER
            series = values[family.name]
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)} if per_process else sample.labels
                key = (sample.name, tuple(sorted(labels.items())))
                if key not in series:
                    series[key] = sample.value
                else:
                    series[key] = max(series[key], sample.value) if same else series[key] + sample.value
    for name, out in merged.items():
        for (sample_name, labels), value in values[name].items():
            out.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class MergedWorkerMetrics:
    """A prometheus-client collector: every worker's ``/metrics``, scraped at each collection and merged."""

    def __init__(self, metrics_ports: Callable[[], list[tuple[int, int]]], timeout_s: float = 5.0) -> None:
        self._metrics_ports = metrics_ports
        self._timeout_s = timeout_s

    def collect(self) -> list[Metric]:
        scrapes = []
        for index, port in self._metrics_ports():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=self._timeout_s) as response:
                    scrapes.append((index, response.read().decode()))
            except OSError as exc:  # a worker restarting or stopping: its series are missing from this scrape
                log.debug("worker %d: metrics unavailable: %s", index, exc)
        return merge_metrics(scrapes)


@dataclass
class Worker:
    """One worker process and what the supervisor knows of it."""

    index: int
    port_file: Path
    proc: subprocess.Popen | None = None
    metrics_port: int = 0
    started: float = 0.0
    deaths: int = 0
    restart_at: float = 0.0

    def read_metrics_port(self) -> int:
        """The worker's own HTTP port, from the port file it writes once it listens (0 until then)."""
        if not self.metrics_port and self.port_file.exists():
            self.metrics_port = json.loads(self.port_file.read_text())["metrics_port"]
        return self.metrics_port


def worker_arguments(settings: ServerSettings, **overrides: object) -> list[str]:
    """``tfclassify serve`` flags that reproduce ``settings`` with ``overrides``."""
    args = []
    for f in fields(ServerSettings):
        value = overrides.get(f.name, getattr(settings, f.name))
        if value is not None:
            args.append(f"--{f.name.replace('_', '-')}={value}")
    return args


class Supervisor:
    """Runs ``settings.workers`` workers as one server until SIGTERM or SIGINT; see the module's docstring."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.count = settings.workers
        self.folder = Path(tempfile.mkdtemp(prefix="tfclassify-workers-"))
        self.board = ReadinessBoard(self.folder / READY_FILE, self.count)
        self.workers = [Worker(i, self.folder / f"worker-{i}.json") for i in range(self.count)]
        self.heartbeat = Heartbeat()
        self._stopping = threading.Event()
        self._reserved: list[socket.socket] = []
        self.grpc_port = settings.grpc_port
        self.http_port = settings.http_port
        self.metrics_port = -1
        #: TensorFlow threads per op in each worker: the cores shared out, unless --intra-op-threads says.
        self.threads_per_worker = settings.intra_op_threads or max(1, (os.cpu_count() or 1) // self.count)

    def run(self) -> int:
        """Start everything, supervise until a stop signal, drain; returns the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stopping.set())
        http = None
        try:
            reserved = reserve_port(self.settings.host, self.settings.grpc_port)
            self._reserved.append(reserved)
            self.grpc_port = reserved.getsockname()[1]
            if self.settings.http_port >= 0:  # shared by the workers as the gRPC port is
                reserved = reserve_port(self.settings.host, self.settings.http_port, "HTTP/REST")
                self._reserved.append(reserved)
                self.http_port = reserved.getsockname()[1]
            if self.settings.metrics_port >= 0:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(MergedWorkerMetrics(self._metrics_ports))
                try:
                    http, _ = start_http_server(self.settings.host, self.settings.metrics_port,
                                                make_app(registry, self.heartbeat, self.not_ready, self.grpc_port,
                                                         notes=self.notes if isinstance(self.settings.model_repo, str)
                                                         else None),
                                                http_tls(self.settings))
                except OSError as exc:
                    raise BindError(bind_message(self.settings.host, self.settings.metrics_port, "metrics",
                                                 exc.strerror)) from exc
                self.metrics_port = http.server_port
            log.info("starting %d workers on gRPC port %d and HTTP/REST port %s (TensorFlow: %d threads per op each), "
                     "metrics on port %s", self.count, self.grpc_port, self.http_port, self.threads_per_worker,
                     self.metrics_port)
            for worker in self.workers:
                self._spawn(worker)
            self._supervise()
            return self._drain()
        finally:
            self._release_ports()
            if http is not None:
                http.shutdown()
            self.board.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def not_ready(self) -> list[str]:
        """What keeps the server from being ready: the workers that are not (yet) ready."""
        if self._stopping.is_set():
            return ["shutting down"]
        return [f"worker {i} not ready" for i in self.board.not_ready()]

    def notes(self) -> list[str]:
        """The workers' ``note:`` lines of ``/readyz`` (a bucket repository that does not answer), by worker: asked
        only for a bucket repository, half a second at most each (a probe must not wait on a stuck worker)."""
        lines = []
        for index, port in self._metrics_ports():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as response:
                    body = response.read().decode()
            except urllib.error.HTTPError as exc:  # 503: not ready, its notes still below
                body = exc.read().decode()
            except OSError:  # a worker restarting or stopping
                continue
            lines += [f"worker {index}: {line[len('note: '):]}" for line in body.splitlines() if line.startswith("note: ")]
        return lines

    # -- workers ------------------------------------------------------------------
    def _spawn(self, worker: Worker) -> None:
        self.board.set(worker.index, False)
        worker.port_file.unlink(missing_ok=True)
        worker.metrics_port = 0
        args = worker_arguments(self.settings, workers=1, grpc_port=self.grpc_port, http_port=self.http_port,
                                metrics_port=0,
                                port_file=worker.port_file, intra_op_threads=self.threads_per_worker)
        env = {**os.environ, WORKER_INDEX_ENV: str(worker.index), WORKER_COUNT_ENV: str(self.count),
               WORKER_DIR_ENV: str(self.folder)}
        command = [sys.executable, "-c", "import sys; from tfclassify.client.cli import main; sys.exit(main())",
                   "serve", *args]
        # Same stdout and stderr as the supervisor: one log stream, each line naming its worker.
        worker.proc = subprocess.Popen(command, env=env)
        worker.started = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _metrics_ports(self) -> list[tuple[int, int]]:
        ports = []
        for worker in self.workers:
            if worker.read_metrics_port() and worker.proc is not None and worker.proc.poll() is None:
                ports.append((worker.index, worker.metrics_port))
        return ports

    def _supervise(self) -> None:
        port_file_written = False
        while not self._stopping.wait(0.2):
            self.heartbeat.beat()
            now = time.monotonic()
            for worker in self.workers:
                if worker.proc is None:
                    if now >= worker.restart_at:
                        self._spawn(worker)
                    continue
                code = worker.proc.poll()
                if code is None:
                    continue
                self.board.set(worker.index, False)  # a dead worker cannot clear its own byte
                worker.deaths = worker.deaths + 1 if now - worker.started < 60 else 1
                pause = RESTART_PAUSES_S[min(worker.deaths, len(RESTART_PAUSES_S)) - 1]
                log.error("worker %d (pid %d) exited with %s; restarting it in %.0f s",
                          worker.index, worker.proc.pid, code, pause)
                worker.proc, worker.restart_at = None, now + pause
            if not port_file_written and all(w.port_file.exists() for w in self.workers):
                # Every worker listens on the ports now: the reservations have done their job.
                self._release_ports()
                self._write_port_file()
                port_file_written = True

    def _release_ports(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()

    def _drain(self) -> int:
        log.info("shutting down: stopping %d workers (grace %.1f s)", self.count, self.settings.shutdown_grace_s)
        running = [(w, w.proc) for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for _, proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 30
        status = 0
        for worker, proc in running:
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                proc.kill()
                code = proc.wait()
            if code != 0:
                log.error("worker %d exited with %s", worker.index, code)
                status = 1
        log.info("stopped")
        return status

    def _write_port_file(self) -> None:
        if not self.settings.port_file:
            return
        data = {"grpc_port": self.grpc_port, "http_port": self.http_port, "metrics_port": self.metrics_port,
                "pid": os.getpid(),
                "workers": [{"index": w.index, "pid": w.proc.pid if w.proc else None,
                             "metrics_port": w.read_metrics_port()}
                            for w in self.workers]}
        write_port_file(self.settings.port_file, data)
