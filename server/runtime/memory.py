"""Giving freed heap memory back to the operating system while the server runs.

glibc's malloc keeps memory that threads have freed in its arenas (one per thread that allocates: the
event loop, the inference, decode and gRPC threads) and returns it to the system only from the top of
each heap. Requests of every size, freed on other threads than the ones that allocated them, leave
free pages in the middle, so the resident size crept up under steady traffic: +4-10% over a soak,
about 4 MiB every 5 s. ``malloc_trim(0)`` releases every free page (madvise), in 0.5-3 ms here.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` (1: memory was released), or None where the C library has none (musl, macOS)."""
    try:
        function = ctypes.CDLL(None).malloc_trim  # the symbols the process has loaded, the C library's among them
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: function(0)


async def trim_periodically(interval_s: float) -> None:
    """Every ``interval_s`` seconds, release the heap's free pages, off the event loop (ctypes releases the
    GIL; the call holds malloc's locks for a few ms, which only other allocating threads notice)."""
    trim = malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed heap memory is returned only as malloc decides")
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        before = resident_mib()
        await loop.run_in_executor(None, trim)
        log.debug("heap trimmed: resident %.1f -> %.1f MiB", before, resident_mib())


def resident_mib(pid: int | str = "self") -> float:
    """The resident set size of process ``pid`` (this one by default) in MiB, from Linux's /proc (``OSError``
    where it cannot be read: the process is gone, or this is not Linux)."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Trimmer:
    """Releases the heap's free pages soon after something freed a lot (a large request's receive buffers), at
    most once per ``min_interval_s``, in a thread (``soon`` is called on the event loop)."""

    def __init__(self, min_interval_s: float = 0.05) -> None:
        self._trim = malloc_trim()
        self._min_interval_s = min_interval_s
        self._pending = False
        self._last = 0.0

    def soon(self) -> None:
        """Trim once the event loop comes round, unless a trim is pending or ran less than the interval ago."""
        if self._trim is None or self._pending:
            return
        loop = asyncio.get_running_loop()
        self._pending = True
        delay = max(0.0, self._last + self._min_interval_s - loop.time())
        loop.call_later(delay, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        trim = self._trim
        assert trim is not None  # soon() schedules this only with a trim
        future = loop.run_in_executor(None, trim)
        future.add_done_callback(lambda _: self._done(loop))

    def _done(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = False
        self._last = loop.time()
