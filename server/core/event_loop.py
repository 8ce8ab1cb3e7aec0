"""The server's event loop, which knows how busy it is.

Its selector times each wait for I/O: the rest of the wall time the loop ran callbacks, or was ready to and
waited for a core. ``busy_fraction`` is that share over the last window. The batcher asks it whether the
server is saturated (``saturated``): only then does a partial batch wait for company on an idle version,
which costs each request a little latency and saves CPU per request, the server's scarce resource then.
Below saturation the loop sleeps in its selector between requests and a request runs at once.
"""

from __future__ import annotations

import asyncio
import selectors
import time

#: The loop is saturated when it spent at least this share of the last window outside its selector. On our
#: 2 shared cores 64 closed-loop callers kept it 65-90% busy: the rest of the time it waited for gRPC's
#: poller thread, which was short of a core.
SATURATED = 0.6
#: Length of the window the share is measured over (seconds).
WINDOW_S = 0.1


class _TimedSelector(selectors.DefaultSelector):
    """The platform's default selector, adding up the time spent waiting in ``select``."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = 0.0

    def select(self, timeout: float | None = None):
        started = time.perf_counter()
        try:
            return super().select(timeout)
        finally:
            self.waited += time.perf_counter() - started


class MeasuredEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop that reports the share of wall time it is busy (see the module's docstring)."""

    def __init__(self) -> None:
        self._timed = _TimedSelector()
        super().__init__(self._timed)
        self._window_start = time.perf_counter()
        self._window_waited = 0.0
        self._busy = 0.0

    def busy_fraction(self) -> float:
        """The share of the last complete window (``WINDOW_S``) the loop spent outside its selector."""
        now = time.perf_counter()
        elapsed = now - self._window_start
        if elapsed >= WINDOW_S:
            waited = self._timed.waited - self._window_waited
            # Asked after more than two windows: nobody asked meanwhile (no request came), so it was quiet.
            self._busy = max(0.0, 1.0 - waited / elapsed) if elapsed < 2 * WINDOW_S else 0.0
            self._window_start, self._window_waited = now, self._timed.waited
        return self._busy

    def saturated(self) -> bool:
        """Whether the loop was busy at least ``SATURATED`` of the last window."""
        return self.busy_fraction() >= SATURATED
