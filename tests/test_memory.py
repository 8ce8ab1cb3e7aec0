"""Memory: the server gives freed heap memory back to the system (``server/memory.py``: the glibc call it makes
releases free pages that malloc itself keeps, in a process shaped like the server's heap), bounds the bytes of
large requests it decodes at once, and keeps nothing of them once answered."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bench.memory import MAX_MESSAGE, PeakSampler, bodies, send_concurrently, warm_up
from conftest import ServerProcess, metric_value, wait_until
from tfclassify.server.admission import ByteBudget
from tfclassify.server.memory import malloc_trim, resident_mib


@pytest.mark.skipif(malloc_trim() is None, reason="this C library has no malloc_trim (not glibc)")
def test_malloc_trim_returns_the_free_pages_that_malloc_keeps():
    # 200 MB of 64 KB blocks (under malloc's mmap threshold, so from the heap), freed from another thread than
    # the one that allocated them, with a live block above them that keeps malloc from shrinking the heap.
    script = textwrap.dedent("""
        import threading
        from tfclassify.server.memory import malloc_trim, resident_mib

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


def test_the_byte_budget_admits_one_alone_and_refuses_past_the_limit():
    refused, changes = [], []
    budget = ByteBudget(100, large_bytes=10, on_change=changes.append, on_refused=lambda: refused.append(1))
    assert budget.admit(150) is None, "alone, any size the message limit lets through is admitted"
    message = budget.admit(10)
    assert message.startswith("the server is decoding and answering 0.0 MiB of large requests (limit 0 MiB, "
                              "--max-request-bytes-in-progress); this 0.0 MiB request would pass it")
    budget.release(150)
    assert budget.admit(60) is None and budget.admit(40) is None and budget.admit(1) is not None
    budget.release(60)
    budget.release(40)
    assert budget.in_progress == 0 and changes == [150, 0, 60, 100, 40, 0] and refused == [1, 1]


@pytest.fixture()
def memory_server(model_repo, tmp_path):
    proc = ServerProcess(model_repo, tmp_path)
    with proc.client() as client:
        client.wait_for_ready(60)
    yield proc
    assert proc.stop() == 0, proc.log()


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
    assert sampler.peak - warm < 1100, f"peak {sampler.peak:.0f} MiB from {warm:.0f} MiB warmed up"
    settled = wait_until(lambda: (lambda rss: rss if rss < warm * 1.10 else None)(resident_mib(pid)), timeout=30,
                         interval=1)
    assert settled < warm * 1.10
    text = memory_server.metrics_text()
    assert metric_value(text, "tfclassify_large_requests_refused_total") == sum(answers[a] for a in refused)
    assert metric_value(text, "tfclassify_large_request_bytes_in_progress") == 0
    with memory_server.client() as client:
        assert len(client.classify(np.zeros((2, 28, 28), np.uint8), "fashion").classes) == 2
    assert " ERROR " not in memory_server.log() and "Traceback" not in memory_server.log()
