"""What every closed-loop load generator of bench/ shares: C callers, each sending one request after the
other for a fixed time, and the summary they print (requests/s, p50, p99, errors by status)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np


async def closed_loop(send: Callable[[int, int], Awaitable[object]], concurrency: int, seconds: float) -> dict:
    """Run ``concurrency`` callers for ``seconds``: caller ``i`` awaits ``send(i, n)`` for its n-th request
    (n = i, i + concurrency, ...) back to back. A gRPC error counts by its status; anything else is a bug and
    ends the run."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def caller(i: int) -> None:
        n = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await send(i, n)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            else:
                latencies.append(time.perf_counter() - t0)
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
