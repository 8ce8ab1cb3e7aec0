"""Progress of a scoring run: a tqdm bar on a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Counts scored and skipped images against ``total``; ``initial`` were done before (a resumed run).
    ``total`` None: not known yet (an input still listing), until ``set_total``.

    On a terminal it draws a bar with images/s, ETA and the skipped count;
    otherwise (CI, Kubernetes logs) it prints one line every ``interval`` seconds.
    """

    def __init__(
        self, total: int | None, initial: int = 0, *, desc: str = "scoring", enabled: bool = True,
        stream: TextIO | None = None, interval: float = 5.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done, self.skipped = total, initial, 0
        self.enabled = enabled
        self.interval = interval
        self._started = self._last = time.monotonic()
        self._initial = initial
        self._bar = None
        if enabled and self.stream.isatty():
            # A terminal that reports no size (some CI pseudo-terminals) would get no bar at all.
            sized = _terminal_size(self.stream).columns > 0
            self._bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, desc=desc,
                             file=self.stream, dynamic_ncols=sized, ncols=None if sized else 80,
                             nrows=None if sized else 24, smoothing=0.1)

    def set_total(self, total: int) -> None:
        """The total, once known."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, images: int, skipped: int = 0) -> None:
        self.done += images
        self.skipped += skipped
        if self._bar is not None:
            self._bar.update(images)
            if skipped:
                self._bar.set_postfix(skipped=self.skipped, refresh=False)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """``scored 12,288/100,000 images (12.3%), 3,456 images/s, 2 skipped, ETA 0:00:25``."""
        elapsed = time.monotonic() - self._started
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            return f"scored {self.done:,} images (still listing), {rate:,.0f} images/s, {self.skipped:,} skipped"
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        eta = timedelta(seconds=round((self.total - self.done) / rate)) if rate > 0 else "?"
        return (f"scored {self.done:,}/{self.total:,} images{share}, {rate:,.0f} images/s, "
                f"{self.skipped:,} skipped, ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _terminal_size(stream: TextIO) -> os.terminal_size:
    try:
        return os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return os.terminal_size((0, 0))
