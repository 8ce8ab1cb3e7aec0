"""Closed-loop Open Inference Protocol load: C concurrent callers, each sending
``ModelInfer`` requests of N images back to back for a fixed time, to any server
that speaks OIP over gRPC (ours, Triton).

Usage: python -m bench.oip_load ADDRESS MODEL [--concurrency 64] [--images 1] [--seconds 10]  -> one JSON line

The requests are Triton's own protobuf messages (``tritonclient.grpc``'s
``ModelInferRequest``: a UINT8 ``images`` tensor in ``raw_input_contents``, the
``probabilities`` output asked for), serialized once and sent as bytes; the
answers are not parsed after the first, which is checked. So the generator
spends as little of the shared CPU as it can, the same for every server. Runs
in its own process: tritonclient's generated code and ours do not share one
protobuf runtime in every environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as oip

METHOD = "/inference.GRPCInferenceService/ModelInfer"
OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def requests(model: str, images: int, count: int = 16) -> list[bytes]:
    """``count`` serialized ``ModelInferRequest``s of ``images`` random 28x28 UINT8 images each."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        request = oip.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="images", datatype="UINT8", shape=[images, 28, 28])
        del tensor  # the data goes in raw_input_contents, as tritonclient sends it
        request.outputs.add(name="probabilities")
        request.raw_input_contents.append(rng.integers(0, 256, (images, 28, 28), dtype=np.uint8).tobytes())
        out.append(request.SerializeToString())
    return out


def _check(answer: bytes, images: int) -> None:
    response = oip.ModelInferResponse.FromString(answer)
    (output,) = response.outputs
    probabilities = np.frombuffer(response.raw_output_contents[0], np.float32)
    if output.name != "probabilities" or list(output.shape) != [images, 10] or probabilities.size != images * 10:
        raise SystemExit(f"oip_load: unexpected answer {output.name} {list(output.shape)}")


async def run(address: str, model: str, concurrency: int, images: int, seconds: float, channels: int) -> dict:
    payloads = requests(model, images)
    pool = [grpc.aio.insecure_channel(address, options=OPTIONS) for _ in range(channels)]
    calls = [ch.unary_unary(METHOD) for ch in pool]  # bytes in, bytes out
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def caller(i: int) -> None:
        call, n = calls[i % len(calls)], i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call(payloads[n % len(payloads)], timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            else:
                latencies.append(time.perf_counter() - t0)
            n += concurrency

    # Warm the connections (and the server's batch sizes) up, then measure.
    for answer in await asyncio.gather(*(c(payloads[0], timeout=60) for c in calls)):
        _check(answer, images)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    for ch in pool:
        await ch.close()
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "images": images,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_second": len(latencies) / elapsed,
        "images_per_second": len(latencies) * images / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("model")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    channels = min(args.channels, args.concurrency)
    print(json.dumps(asyncio.run(run(args.address, args.model, args.concurrency, args.images, args.seconds, channels))))


if __name__ == "__main__":
    main()
