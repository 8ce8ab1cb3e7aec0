"""What every servicer shares: one mapping of domain errors to gRPC statuses,
and one place where RPCs are counted in the metrics (with their ``api`` label)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import grpc

from tfclassify.server.errors import ServingError
from tfclassify.server.metrics import ServerMetrics
from tfclassify.server.registry import ModelRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class RpcFailure(Exception):
    """An RPC's outcome other than OK: its status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class RpcMeter:
    """Runs the RPCs of one API: measured, counted, and failed with the right status.

    ``codes`` overrides the status of some error types where the protocol
    being spoken has its own convention (TensorFlow Serving answers an unknown
    version label with INVALID_ARGUMENT, say). ``version_of`` reads the model
    version a response answered with, for the ``version`` metric label.
    """

    def __init__(
        self,
        api: str,
        metrics: ServerMetrics,
        registry: ModelRegistry,
        version_of: Callable[[object], str] = lambda response: "",
        codes: Mapping[type[ServingError], grpc.StatusCode] | None = None,
    ) -> None:
        self.api = api
        self._metrics = metrics
        self._registry = registry
        self._version_of = version_of
        self._codes = dict(codes or {})
        self._in_flight: dict[str, object] = {}

    def status_of(self, exc: ServingError) -> grpc.StatusCode:
        """The status code this API answers ``exc`` with."""
        for error_type, code in self._codes.items():
            if isinstance(exc, error_type):
                return code
        return exc.code

    async def observed(self, method: str, model: str, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        """Run ``work`` measured; a failure ends the RPC with its status."""
        try:
            return await self.measured(method, model, work)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.details)
            raise  # not reached: abort raises

    async def measured(self, method: str, model: str, work: Awaitable[T]) -> T:
        """Run ``work``, counting it in the metrics; failures become ``RpcFailure``."""
        started = time.perf_counter()
        code, version = grpc.StatusCode.OK, ""
        in_flight = self._in_flight.get(method)
        if in_flight is None:
            in_flight = self._in_flight[method] = self._metrics.requests_in_flight.labels(self.api, method)
        in_flight.inc()
        try:
            response = await work
            version = self._version_of(response)
            return response
        except ServingError as exc:
            code = self.status_of(exc)
            raise RpcFailure(code, str(exc)) from exc
        except RpcFailure as failure:  # raised by a servicer for a protocol-specific rule
            code = failure.code
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s %s failed", self.api, method)
            raise RpcFailure(code, f"internal error in {method}; the server log has the details") from None
        finally:
            # Unknown model names are not used as label values: clients must not be able to grow the series count.
            known = model if model in self._registry.names() else ""
            in_flight.dec()
            self._metrics.observe_request(self.api, method, known, version, code.name, time.perf_counter() - started)


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The RPC's deadline as a ``time.monotonic()`` instant (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def ordered_window(
    requests: AsyncIterator[R], handle: Callable[[R], Awaitable[T]], window: int
) -> AsyncIterator[asyncio.Future[T]]:
    """Start ``handle`` on each request of a stream as it arrives, up to
    ``window`` ahead of the consumer, and yield the tasks in request order.

    Reading ahead lets the next request queue for a batch while one runs;
    the consumer awaits each task (and decides what a failure means). When the
    consumer stops, the reader and the tasks not yet yielded are cancelled.
    """
    pending: asyncio.Queue[asyncio.Future[T] | None] = asyncio.Queue(maxsize=window)

    async def read_ahead() -> None:
        try:
            async for request in requests:
                await pending.put(asyncio.ensure_future(handle(request)))
        finally:
            await pending.put(None)

    reader = asyncio.create_task(read_ahead())
    try:
        while (task := await pending.get()) is not None:
            yield task
    finally:
        reader.cancel()
        while not pending.empty():
            if (task := pending.get_nowait()) is not None:
                if task.done() and not task.cancelled():
                    task.exception()  # the stream already ended: retrieve it so asyncio does not log it
                task.cancel()
