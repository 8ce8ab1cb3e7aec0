"""Closed-loop load generator: C concurrent callers, each sending single-image
``Classify`` requests back to back for a fixed time.

Usage: python -m bench.load ADDRESS MODEL --concurrency 64 --seconds 5  -> one JSON line

Requests are serialized once and sent as bytes, and responses are not
parsed, so the generator spends as little of the shared CPU as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np

from tfclassify.common.tensors import to_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb

METHOD = "/tfclassify.v1.Classifier/Classify"


async def run(address: str, model: str, concurrency: int, seconds: float, channels: int) -> dict:
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(16):
        request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=model))
        to_tensor_proto(rng.integers(0, 256, (1, 28, 28), dtype=np.uint8), out=request.tensor)
        payloads.append(request.SerializeToString())
    pool = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    calls = [ch.unary_unary(METHOD) for ch in pool]  # bytes in, bytes out
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def caller(i: int) -> None:
        call = calls[i % len(calls)]
        n = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call(payloads[n % len(payloads)], timeout=10)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            else:
                latencies.append(time.perf_counter() - t0)
            n += concurrency

    # Warm the connections up, then measure.
    await asyncio.gather(*(c(payloads[0], timeout=10) for c in calls))
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    for ch in pool:
        await ch.close()
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("model")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(run(args.address, args.model, args.concurrency, args.seconds, min(args.channels, args.concurrency)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
