"""Dynamic batching: requests for one model version are queued and coalesced
into TensorFlow calls of at most ``max_batch_size`` images.

An idle version runs a request at once (no added latency at low load) unless
the server is saturated (its event loop busy: ``event_loop.MeasuredEventLoop``)
and the version's last batch held several requests: requests are then coming
from several callers faster than it answers them, and it waits for more while
they keep coming (no gap longer than ``GAP_FACTOR`` times the mean gap between
the last batch's requests), until as many wait as the last batch that ended
that way held (a closed loop of N callers sends N at a time), for at most
``batch_timeout``, and never when a queued request's deadline is nearer than
that. While a batch runs, the queue fills the next one, which starts when the
running one ends (or waits for company as above), or alongside the running
ones (up to ``max_concurrent_batches`` per replica) once it is full or its
oldest request has waited ``batch_timeout``. The
queue is bounded: past ``max_enqueued_images`` a request is refused at once
(RESOURCE_EXHAUSTED). A request whose deadline passed while it waited is
dropped without running (DEADLINE_EXCEEDED); one whose caller went away
(cancelled future) is skipped. Requests larger than ``max_batch_size`` are
split into several queue entries and reassembled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from tfclassify.server.core.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelUnavailableError,
    QueueFullError,
)

log = logging.getLogger(__name__)

#: An idle version of a saturated server whose last batch held several requests waits for more until no
#: request has come for this many times the mean gap between that batch's requests. Each TensorFlow call then
#: serves more requests (64 single-image callers on 2 cores: batches of about 13 instead of 6, a sixth less
#: server CPU per request). A lone caller's requests, one per batch, never wait.
GAP_FACTOR = 3.0


@dataclass(frozen=True)
class BatchingOptions:
    """Dynamic batching settings of one model version (see ``BatchingConfig`` in model_config.proto)."""

    max_batch_size: int = 4096
    batch_timeout_s: float = 0.005
    max_enqueued_images: int = 65536
    max_concurrent_batches: int = 2
    warmup_batch_sizes: tuple[int, ...] = (1, 32, 4096)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_concurrent_batches < 1:
            raise ValueError("max_batch_size and max_concurrent_batches must be at least 1")
        if self.max_enqueued_images < self.max_batch_size:
            raise ValueError(
                f"max_enqueued_images ({self.max_enqueued_images}) must hold at least one full batch "
                f"({self.max_batch_size})"
            )
        if self.batch_timeout_s < 0:
            raise ValueError("batch_timeout must not be negative")

    def fitted(self, image_bytes: int, max_batch_bytes: int) -> BatchingOptions:
        """These options for images of ``image_bytes`` each (as the model takes them): at most
        ``max_batch_bytes`` in one TensorFlow call, the queue as many batches deep as before and no warm-up
        batch larger. A 224x224x3 float image is 588 KiB: 4,096 of them would be a 2.3 GiB call."""
        most = max(1, max_batch_bytes // max(1, image_bytes))
        if self.max_batch_size <= most:
            return self
        return dataclasses.replace(
            self, max_batch_size=most,
            max_enqueued_images=max(most, self.max_enqueued_images * most // self.max_batch_size),
            warmup_batch_sizes=tuple(sorted({min(s, most) for s in self.warmup_batch_sizes})),
        )


Outputs = dict[str, np.ndarray]


class Replica:
    """One copy of a model version on one device, and how many batches it is running.

    ``run`` maps a batch ``[N, ...]`` to named outputs with one row per image.
    """

    def __init__(self, device: str, run: Callable[[np.ndarray], Outputs]) -> None:
        self.device = device
        self.run = run
        self.in_flight = 0
        self.batches = 0


@dataclass
class RequestTiming:
    """Where one request's time went in the batcher, filled in as it runs (seconds)."""

    queue: float = 0.0
    #: The TensorFlow calls that computed its images (a split request has several).
    infer: float = 0.0


@dataclass(eq=False)
class _Entry:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float
    deadline: float | None
    timing: RequestTiming | None = None
    #: In the queue and counted in ``queued_images`` (until taken into a batch or given up by its caller).
    counted: bool = True


@dataclass
class BatchObserver:
    """Callbacks the batcher reports to (metrics); all optional."""

    on_batch: Callable[[Replica, int, float], None] = lambda replica, size, seconds: None
    on_queue_wait: Callable[[float], None] = lambda seconds: None


@dataclass(eq=False)
class Batcher:
    """The queue and scheduler of one model version."""

    name: str
    replicas: Sequence[Replica]
    options: BatchingOptions
    executor: Executor
    observer: BatchObserver = field(default_factory=BatchObserver)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        #: Whether the server is saturated, when its loop knows (event_loop.MeasuredEventLoop); else taken as so.
        self._saturated: Callable[[], bool] = getattr(self._loop, "saturated", lambda: True)
        self._queue: deque[_Entry] = deque()
        self._queued_images = 0
        self._in_flight = 0
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._reruns: set[asyncio.Task] = set()  # a failed batch's requests, run one by one
        self._timer: asyncio.TimerHandle | None = None
        self._last_arrival = 0.0
        #: How long an idle version waits after the last arrival for another (0: not at all); see GAP_FACTOR.
        self._company_gap = 0.0
        #: An idle version starts a batch as soon as this many requests wait (0: no such number yet).
        self._company_target = 0
        #: The nearest deadline of the requests queued since the queue was last empty (inf: none).
        self._earliest_deadline = math.inf

    @property
    def queued_images(self) -> int:
        """Images waiting in the queue."""
        return self._queued_images

    @property
    def batches_in_flight(self) -> int:
        """TensorFlow calls running."""
        return self._in_flight

    async def run(
        self, images: np.ndarray, deadline: float | None = None, timing: RequestTiming | None = None
    ) -> Outputs:
        """The model's outputs for ``images``, computed in as few TensorFlow calls as the queue allows.

        ``deadline`` is a ``time.monotonic()`` instant after which the
        request is not worth running; ``timing``, if given, receives the
        request's time in the queue and in TensorFlow.
        """
        if self._closed:
            raise ModelUnavailableError(f"{self.name} is unloading; retry to reach the current version")
        n = len(images)
        if self._queued_images + n > self.options.max_enqueued_images:
            raise QueueFullError(
                f"{self.name}: {self._queued_images} images are queued and {n} more would pass the limit of "
                f"{self.options.max_enqueued_images}; retry later or raise max_enqueued_images"
            )
        now = time.monotonic()
        step = self.options.max_batch_size
        create_future = self._loop.create_future
        entries = [_Entry(images[i : i + step], create_future(), now, deadline, timing) for i in range(0, n, step)]
        self._queue.extend(entries)
        self._queued_images += n
        self._last_arrival = now
        if deadline is not None and deadline < self._earliest_deadline:
            self._earliest_deadline = deadline
        if self._in_flight:  # requests come while a batch runs: more callers than the last batch held
            self._company_target = 0
        self._idle.clear()
        self._schedule()
        try:
            parts = [await e.future for e in entries]
        finally:
            released = 0
            for e in entries:  # the caller went away: let the scheduler skip what is still queued
                if not e.future.done():
                    e.future.cancel()
                elif not e.future.cancelled():
                    e.future.exception()  # a part that failed after the first failure: already reported
                if e.counted and e.future.cancelled():  # its slots are free at once (the scheduler drops it)
                    e.counted = False
                    released += len(e.images)
                    e.images = e.images[:0]  # and its pixels are not held until then
            self._queued_images -= released
        return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def close(self) -> None:
        """Refuse new requests, finish the queued and running ones."""
        self._closed = True
        self._schedule()
        await self._idle.wait()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- scheduling -------------------------------------------------------------
    # Decisions are taken synchronously, on the event loop, whenever something changes (a request
    # arrives, a batch ends, the timer fires), and each TensorFlow call goes to the executor with a
    # plain callback for its end: no scheduler task to wake and no task per batch, which cost the
    # event loop more per small batch than the rest of the batcher.
    def _schedule(self) -> None:
        """Start every batch that may start now, time the wait of the next, and note when all is done."""
        timeout = self._dispatch()
        if not self._queue and self._in_flight == 0:
            self._idle.set()
        if timeout is not None:
            # Wake up when the next batch may go. A pending timer that would fire too late (set while a batch
            # ran, for the batch timeout; the version is idle now and waits only for a gap) is replaced; one
            # that fires early finds nothing to start and sets the next.
            when = self._loop.time() + timeout
            if self._timer is None or when < self._timer.when():
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _dispatch(self) -> float | None:
        """Start every batch that may start now; returns how long until the next may go (None: nothing waits)."""
        capacity = self.options.max_concurrent_batches * len(self.replicas)
        timeout = self.options.batch_timeout_s
        while self._queue and self._in_flight < capacity:
            now = time.monotonic()
            waited = now - self._queue[0].enqueued
            target = self._company_target
            if self._queued_images >= self.options.max_batch_size or self._closed or waited >= timeout:
                target = 0  # full, or waited long enough: says nothing about how many callers there are
            elif self._in_flight:
                return timeout - waited
            elif not (target and len(self._queue) >= target):  # not yet as many requests as the last batch
                quiet = now - self._last_arrival
                if quiet < self._company_gap and self._earliest_deadline - now > timeout and self._saturated():
                    return min(self._company_gap - quiet, timeout - waited)  # requests keep coming: wait for company
                target = -1 if self._company_gap else 0  # -1: the batch ends as the requests stopped coming
            batch = self._take_batch()
            if not self._queue:
                self._earliest_deadline = math.inf
            if batch:
                # A batch that ended as its callers' requests stopped coming says how many callers send together
                # (a closed loop of N callers: N): the next goes as soon as that many requests have come.
                self._company_target = len(batch) if target < 0 else target
                self._start(batch)
        return None

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        size = 0
        now = time.monotonic()
        while self._queue and size + len(self._queue[0].images) <= self.options.max_batch_size:
            entry = self._queue.popleft()
            if entry.counted:
                entry.counted = False
                self._queued_images -= len(entry.images)
            if entry.future.done():  # cancelled by its caller
                continue
            if entry.deadline is not None and now >= entry.deadline:
                entry.future.set_exception(
                    DeadlineExceededError(f"{self.name}: the deadline passed after {now - entry.enqueued:.3f} s in the queue")
                )
                continue
            self.observer.on_queue_wait(now - entry.enqueued)
            if entry.timing is not None:
                entry.timing.queue += now - entry.enqueued
            batch.append(entry)
            size += len(entry.images)
        return batch

    def _start(self, batch: list[_Entry]) -> None:
        span = batch[-1].enqueued - batch[0].enqueued  # the parts of one split request share its arrival
        self._company_gap = GAP_FACTOR * span / (len(batch) - 1) if len(batch) > 1 else 0.0
        replica = min(self.replicas, key=lambda r: r.in_flight)  # least busy replica
        images = batch[0].images if len(batch) == 1 else np.concatenate([e.images for e in batch])
        started = time.perf_counter()
        try:
            future = self.executor.submit(replica.run, images)
        except RuntimeError as exc:  # the executor has shut down: the process is ending
            for e in batch:
                self._fail(replica, e, exc)
            return
        replica.in_flight += 1
        self._in_flight += 1
        future.add_done_callback(functools.partial(self._hand_back, replica, batch, started))

    def _hand_back(self, replica: Replica, batch: list[_Entry], started: float, future: Future) -> None:
        """In the executor's thread: have the event loop take the batch's outcome."""
        try:
            self._loop.call_soon_threadsafe(self._finished, replica, batch, started, future)
        except RuntimeError:  # the event loop has closed: nobody waits for the answer
            pass

    def _finished(self, replica: Replica, batch: list[_Entry], started: float, future: Future) -> None:
        """On the event loop: answer the batch's requests, then schedule what waits."""
        exc = future.exception()
        rerun = exc is not None and len(batch) > 1
        try:
            if exc is None:
                self._answer(replica, batch, future.result(), time.perf_counter() - started)
            elif rerun:
                # A TensorFlow failure fails only the requests that cause it, not the server. Requests batched
                # together are independent: run each alone, so one whose images make the model fail does not
                # take the others down with it. The replica counts as busy until they have run.
                log.log(logging.DEBUG if isinstance(exc, InvalidInputError) else logging.WARNING,
                        "%s: a batch of %d requests failed on %s (%s); running them one by one", self.name,
                        len(batch), replica.device, type(exc).__name__)
                task = self._loop.create_task(self._rerun_each(replica, batch))
                self._reruns.add(task)
                task.add_done_callback(self._reruns.discard)
            else:
                self._fail(replica, batch[0], exc)
        except BaseException as unexpected:  # never leave a caller waiting, nor the replica busy
            for e in batch:
                self._fail(replica, e, unexpected)
            rerun = False
            raise
        finally:
            if not rerun:
                self._release(replica)

    def _answer(self, replica: Replica, batch: list[_Entry], outputs: Outputs, seconds: float) -> None:
        self.observer.on_batch(replica, sum(len(e.images) for e in batch), seconds)
        for e in batch:
            if e.timing is not None:
                e.timing.infer += seconds
        replica.batches += 1
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        offset = 0
        for e in batch:
            n = len(e.images)
            if not e.future.done():
                e.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
            offset += n

    def _release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self._in_flight -= 1
        self._schedule()

    async def _rerun_each(self, replica: Replica, batch: list[_Entry]) -> None:
        try:
            for e in batch:
                await self._execute_alone(replica, e)
        finally:
            self._release(replica)

    async def _execute_alone(self, replica: Replica, entry: _Entry) -> None:
        if entry.future.done():
            return
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, replica.run, entry.images)
        except Exception as exc:  # noqa: BLE001 - _fail logs it and answers the request with it
            self._fail(replica, entry, exc)
        else:
            if not entry.future.done():
                entry.future.set_result(outputs)

    def _fail(self, replica: Replica, entry: _Entry, exc: BaseException) -> None:
        n = len(entry.images)
        if isinstance(exc, InvalidInputError):  # the request's own input (a file the graph cannot decode)
            if not entry.future.done():
                entry.future.set_exception(exc)
            return
        # Logged here, once, with the traceback: the RPC answers INTERNAL without a second one.
        log.error("%s: the model failed on a request of %d images on %s", self.name, n, replica.device,
                  exc_info=exc)
        if not entry.future.done():
            entry.future.set_exception(InferenceError(
                f"{self.name}: the model failed on this request of {n} images ({type(exc).__name__}); "
                "the server log has the details"))
