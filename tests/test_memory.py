"""The server gives freed heap memory back to the system (``server/memory.py``): the glibc call it makes
releases free pages that malloc itself keeps, and does so in a process shaped like the server's heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tfclassify.server.memory import malloc_trim


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
