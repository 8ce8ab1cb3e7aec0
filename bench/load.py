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

import numpy as np

from bench.closed_loop import grpc_bytes_load
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
    return await grpc_bytes_load(address, METHOD, payloads, concurrency, seconds, channels, timeout=10)


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
