"""What every servicer shares: the meter that counts every RPC in the metrics (with its ``api`` label), reads
its ``Call`` record, and fails it with the status ``statuses.status_code`` gives; and stream helpers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from tfclassify.server.apis.access_log import AccessLog
from tfclassify.server.apis.admission import Admission
from tfclassify.server.apis.statuses import status_code
from tfclassify.server.auth import ALL_MODELS, TokenTable, bearer_token
from tfclassify.server.core.calls import Call
from tfclassify.server.core.errors import ServingError
from tfclassify.server.core.metrics import ServerMetrics
from tfclassify.server.core.registry import ModelRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class RpcFailure(Exception):
    """An RPC's outcome other than OK: its status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


Handler = Callable[[R, grpc.aio.ServicerContext, Call], Awaitable[T]]


@dataclass(frozen=True)
class Metering:
    """What every API's meter shares: the metrics, the served models (for label values), the token table
    (with token authentication: which models a token may use), the access log and the admission control."""

    metrics: ServerMetrics
    registry: ModelRegistry
    tokens: TokenTable | None = None
    access_log: AccessLog | None = None
    admission: Admission | None = None


class RpcMeter:
    """Runs the RPCs of one API: measured, counted, and failed with the status ``statuses.status_code`` gives."""

    def __init__(self, api: str, metering: Metering, transport: str = "grpc") -> None:
        self.api = api
        #: The ``api`` label of the metrics and the access log: the API, and its transport when not gRPC
        #: (``tensorflow_serving_http``): one API over two transports is two rows on a dashboard.
        self.label = api if transport == "grpc" else f"{api}_{transport}"
        self._metrics = metering.metrics
        self._registry = metering.registry
        #: With token authentication: which models the caller's token may use (the interceptor checked it is valid).
        self._tokens = metering.tokens
        self._access_log = metering.access_log
        self._admission = metering.admission

    async def observed(self, method: str, model: str, handler: Handler[R, T], request: R,
                       context: grpc.aio.ServicerContext) -> T:
        """Run ``handler(request, context, call)`` measured; a failure ends the RPC with its status."""
        try:
            return await self.measured(method, model, handler, request, context)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details)
            raise  # not reached: abort raises

    async def measured(self, method: str, model: str, handler: Handler[R, T], request: R,
                       context: grpc.aio.ServicerContext) -> T:
        """Run ``handler(request, context, call)``, counting it in the metrics; failures become ``RpcFailure``."""
        call = Call()
        code = grpc.StatusCode.OK
        in_flight = self._metrics.in_flight_count(self.label, method)
        in_flight[0] += 1
        admitted = False
        client = None
        try:
            if self._admission is not None:
                client = self._admission.admit(context)
                admitted = True
            if self._tokens is not None and model:
                allowed = self._tokens.models_for(bearer_token(context.invocation_metadata()))
                if allowed is None or (allowed is not ALL_MODELS and model not in allowed):
                    code = grpc.StatusCode.PERMISSION_DENIED
                    raise RpcFailure(code, clip(f"this token may not use model {model!r}"))
            return await handler(request, context, call)
        except ServingError as exc:
            code = status_code(exc, self.api)
            raise RpcFailure(code, clip(str(exc))) from exc
        except RpcFailure:
            raise
        except asyncio.CancelledError:  # gRPC ends the handler: the client went away, or its deadline passed
            remaining = context.time_remaining()
            code = grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else \
                grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s %s failed", self.label, method)
            raise RpcFailure(code, f"internal error in {method}; the server log has the details") from None
        finally:
            in_flight[0] -= 1
            if admitted:
                assert self._admission is not None  # admitted by it
                self._admission.release(client)
            finished = time.perf_counter_ns()
            if call.served is not None:
                _record_statistics(call, code, finished)
            # Unknown model names are not used as label values: clients must not be able to grow the series count.
            known = model if self._registry.has(model) else ""
            seconds = (finished - call.started_ns) / 1e9
            self._metrics.observe_request(self.label, method, known, call.version, code.name, seconds)
            if self._access_log is not None:
                self._access_log.record(self.label, method, model, bool(known), call.version, call.images, seconds,
                                        code.name)


#: Longest status message sent: messages echo names from the request, and gRPC refuses trailing metadata over
#: 8 KiB, failing the call on the client with an error about metadata rather than ours.
MAX_DETAILS = 1000


def clip(details: str, limit: int = MAX_DETAILS) -> str:
    """``details`` cut to ``limit`` characters, saying how long it was."""
    return details if len(details) <= limit else f"{details[:limit]}... ({len(details):,} characters)"


def _record_statistics(call: Call, code: grpc.StatusCode, finished: int) -> None:
    """Account a request that ran (or tried to run) images in its version's statistics (what OIP reports)."""
    assert call.served is not None  # the caller checks
    statistics = call.served.metrics.statistics
    total = finished - call.started_ns
    if code is not grpc.StatusCode.OK or call.timing is None:  # cancelled callers count as failed, as in Triton
        statistics.record_failure(total)
        return
    timing = call.timing
    statistics.record_success(call.images, total, call.queued_ns - call.started_ns, int(timing.queue * 1e9),
                              int(timing.infer * 1e9), finished - call.ran_ns)


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The RPC's deadline as a ``time.monotonic()`` instant (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def ordered_window(
    requests: AsyncIterator[R], handle: Callable[[R], Awaitable[T]], window: int
) -> AsyncGenerator[asyncio.Future[T], None]:
    """Start ``handle`` on each request of a stream as it arrives, up to
    ``window`` ahead of the consumer, and yield the tasks in request order.

    Reading ahead lets the next request queue for a batch while one runs;
    the consumer awaits each task (and decides what a failure means). When the
    consumer stops, the reader and every task it started are cancelled and
    awaited. A task's failure is the consumer's to report: asyncio does not log
    those it never awaited (the stream ended first) as unretrieved.
    """
    # Unbounded, so that the reader never waits to put (the end of the stream above all): ``room`` bounds it.
    pending: asyncio.Queue[asyncio.Future[T] | None] = asyncio.Queue()
    room = asyncio.Semaphore(window)
    started: set[asyncio.Future[T]] = set()

    def settled(task: asyncio.Future[T]) -> None:
        started.discard(task)
        if not task.cancelled():
            task.exception()  # marks it retrieved; the consumer still gets it when it awaits the task

    async def read_ahead() -> None:
        try:
            async for request in requests:
                await room.acquire()
                task = asyncio.ensure_future(handle(request))
                started.add(task)
                task.add_done_callback(settled)
                pending.put_nowait(task)
        except grpc.RpcError:
            pass  # the client went away: the stream ends with what it has
        except Exception:  # a bug: the stream ends with INTERNAL after the answers before it
            log.exception("reading a stream's requests failed")
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(RpcFailure(grpc.StatusCode.INTERNAL,
                                            "internal error reading the stream; the server log has the details"))
            failed.exception()  # retrieved: the consumer still gets it, and nobody is told if it never asks
            pending.put_nowait(failed)
        finally:
            pending.put_nowait(None)

    reader = asyncio.create_task(read_ahead())
    try:
        while (task := await pending.get()) is not None:
            room.release()
            yield task
    finally:
        reader.cancel()
        for task in list(started):
            task.cancel()
        # Awaited, so that none is left pending for the garbage collector to find (their failures are the
        # consumer's to report, or nobody's once the stream has ended).
        await asyncio.gather(reader, *started, return_exceptions=True)
