"""Memory: the server gives freed heap memory back to the system (``server/runtime/memory.py``: the glibc call it makes
releases free pages that malloc itself keeps, in a process shaped like the server's heap), bounds the bytes of
large requests it decodes at once, and keeps nothing of them once answered."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import grpc
import numpy as np
import pytest
from conftest import ServerProcess, metric_value, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.memory import DEPLOYMENT_LIMIT_MIB, MAX_MESSAGE, PeakSampler, bodies, send_concurrently, warm_up
from tfclassify.client.requests import classify_request
from tfclassify.server.runtime.memory import malloc_trim, resident_mib
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc


@pytest.mark.skipif(malloc_trim() is None, reason="this C library has no malloc_trim (not glibc)")
def test_malloc_trim_returns_the_free_pages_that_malloc_keeps():
    # 200 MB of 64 KB blocks (under malloc's mmap threshold, so from the heap), freed from another thread than
    # the one that allocated them, with a live block above them that keeps malloc from shrinking the heap.
    script = textwrap.dedent("""
        import threading
        from tfclassify.server.runtime.memory import malloc_trim, resident_mib

        blocks = [bytearray(64 * 1024) for _ in range(3200)]
        pin = bytearray(64 * 1024)
        freer = threading.Thread(target=blocks.clear)
        freer.start()
        freer.join()
        kept = resident_mib()
        malloc_trim()()
        print(kept, resident_mib())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    kept, trimmed = map(float, out.stdout.split())
    assert kept - trimmed > 150, (kept, trimmed)


@pytest.fixture()
def memory_server(model_repo, tmp_path):
    proc = ServerProcess(model_repo, tmp_path)
    with proc.client() as client:
        client.wait_for_ready(60)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.mark.slow
def test_concurrent_maximum_size_requests_stay_bounded_and_leave_nothing_behind(memory_server):
    """8 concurrent 64 MiB requests of every kind (valid PNG files, too many images, float pixels through two
    APIs, bytes that are not a message): the large ones past the byte budget are refused at once; the resident
    size peaks well below the 3 GiB the Deployment allows, and returns to its warmed-up level in seconds (it
    had stayed 1 GB above it: refused requests were held by reference cycles until a full garbage collection)."""
    pid, address = memory_server.proc.pid, memory_server.address
    warm_up(address, "fashion")
    time.sleep(11)  # one periodic trim
    warm = resident_mib(pid)
    kinds = bodies("fashion", MAX_MESSAGE, 16384)
    with PeakSampler(pid) as sampler:
        answers = send_concurrently(address, [(name, *kinds[name]) for name in [*kinds, *kinds][:8]])
    refused = [answer for answer in answers if answer.endswith("RESOURCE_EXHAUSTED")]
    assert refused and sum(answers.values()) == 8, answers
    assert set(answers) <= {f"{name}: {code}" for name in kinds for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")}
    # The Deployment's limit with a fifth to spare; gRPC alone holds the 512 MiB it receives before any refusal.
    assert sampler.peak < 0.8 * DEPLOYMENT_LIMIT_MIB, f"peak {sampler.peak:.0f} MiB from {warm:.0f} MiB warmed up"
    settled = wait_until(lambda: (lambda rss: rss if rss < warm * 1.10 else None)(resident_mib(pid)), timeout=30,
                         interval=1)
    assert settled < warm * 1.10
    text = memory_server.metrics_text()
    assert metric_value(text, "tfclassify_large_requests_refused_total") == sum(answers[a] for a in refused)
    assert metric_value(text, "tfclassify_large_request_bytes_in_progress") == 0
    with memory_server.client() as client:
        assert len(client.classify(np.zeros((2, 28, 28), np.uint8), "fashion").classes) == 2
    assert " ERROR " not in memory_server.log() and "Traceback" not in memory_server.log()


def test_a_lone_stream_of_large_requests_is_not_refused_by_its_own_read_ahead(model_repo, tmp_path):
    """A 16 MiB budget and one ClassifyStream of three 12 MiB requests, read ahead together: all answered. And a
    health Watch with a 2 MiB service name (not a method that carries images) holds none of the budget."""
    proc = ServerProcess(model_repo, tmp_path, "--max-request-bytes-in-progress", str(16 << 20))
    try:
        images = np.random.default_rng(0).integers(0, 256, (16000, 28, 28), dtype=np.uint8)
        with grpc.insecure_channel(proc.address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="x" * (2 << 20)), timeout=60)
            requests = [classify_request(images, "fashion", None, None, 1, False, True) for _ in range(3)]
            answers = list(pb_grpc.ClassifierStub(channel).ClassifyStream(iter(requests), timeout=120))
            assert [len(a.classes) for a in answers] == [16000] * 3
            alone = pb_grpc.ClassifierStub(channel).Classify(requests[0], timeout=120)
            assert len(alone.classes) == 16000
            watch.cancel()
        text = proc.metrics_text()
        assert metric_value(text, "tfclassify_large_requests_refused_total") == 0
        assert metric_value(text, "tfclassify_large_request_bytes_in_progress") == 0
    finally:
        assert proc.stop() == 0, proc.log()
