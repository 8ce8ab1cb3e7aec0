"""What every closed-loop load generator of bench/ shares: C callers, each sending one request after the
other for a fixed time, and the summary they print (requests/s, p50, p99, errors by status); and the gRPC
load of prebuilt request bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
import numpy as np


async def closed_loop(send: Callable[[int, int], Awaitable[str | None]], concurrency: int, seconds: float) -> dict:
    """Run ``concurrency`` callers for ``seconds``: caller ``i`` awaits ``send(i, n)`` for its n-th request
    (n = i, i + concurrency, ...) back to back. ``send`` returns None when answered, else the failure's name
    (an HTTP status) to count; a gRPC error counts by its status; anything else is a bug and ends the run."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def caller(i: int) -> None:
        n = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                failure = await send(i, n)
            except grpc.aio.AioRpcError as exc:
                failure = exc.code().name
            if failure is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[failure] = errors.get(failure, 0) + 1
            n += concurrency

    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


async def grpc_bytes_load(address: str, method: str, payloads: Sequence[bytes], concurrency: int, seconds: float,
                          channels: int, timeout: float, warm_timeout: float | None = None,
                          options: Sequence[tuple[str, int]] = (),
                          check: Callable[[bytes], None] = lambda answer: None) -> dict:
    """``closed_loop`` of unary calls to ``method`` over ``channels`` grpc.aio channels, sending ``payloads``
    (serialized requests) in turn and not parsing the answers: the least client CPU per call. One call per
    channel first warms the connections up (``warm_timeout``, else ``timeout``; ``check`` looks at its answer)."""
    pool = [grpc.aio.insecure_channel(address, options=list(options)) for _ in range(channels)]
    calls = [ch.unary_unary(method) for ch in pool]  # bytes in, bytes out

    async def send(i: int, n: int) -> None:
        await calls[i % len(calls)](payloads[n % len(payloads)], timeout=timeout)

    for answer in await asyncio.gather(*(c(payloads[0], timeout=warm_timeout or timeout) for c in calls)):
        check(answer)
    result = await closed_loop(send, concurrency, seconds)
    for ch in pool:
        await ch.close()
    return result
