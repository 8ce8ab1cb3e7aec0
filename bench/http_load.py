"""Closed-loop HTTP load generator: C concurrent callers, each sending single-image requests back to back.

Usage: python -m bench.http_load URL MODEL --kind classifier|oip_binary|oip_json|tfserving_json
       --concurrency 64 --seconds 5  -> one JSON line

The bodies are built once (each kind as its own clients send it) and answers are read but not parsed, so the
generator spends as little of the shared CPU as it can; aiohttp's client keeps one keep-alive connection per
caller, as a service's connection pool does.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import numpy as np

from bench.closed_loop import closed_loop
from tfclassify.common.tensors import to_tensor_proto
from tfclassify.v1 import classifier_pb2 as pb

KINDS = ("classifier", "oip_binary", "oip_json", "tfserving_json")


def request_of(kind: str, model: str, image: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one single-image request of ``kind``."""
    if kind == "classifier":  # our Classify, the message bench.load sends over gRPC
        message = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=model))
        to_tensor_proto(image[np.newaxis], out=message.tensor)
        return ("/tfclassify.v1.Classifier/Classify", message.SerializeToString(),
                {"Content-Type": "application/x-protobuf"})
    if kind == "oip_binary":  # as tritonclient.http sends it with binary_data=True
        header = json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                                         "parameters": {"binary_data_size": image.size}}],
                             "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
        return (f"/v2/models/{model}/infer", header + image.tobytes(),
                {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    if kind == "oip_json":
        body = {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                            "data": image.ravel().tolist()}], "outputs": [{"name": "probabilities"}]}
        return f"/v2/models/{model}/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    if kind == "tfserving_json":
        return (f"/v1/models/{model}:predict", json.dumps({"instances": image[np.newaxis].tolist()}).encode(),
                {"Content-Type": "application/json"})
    raise ValueError(kind)


async def run(url: str, model: str, kind: str, concurrency: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    bodies = [request_of(kind, model, rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(16)]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def send(i: int, n: int) -> str | None:
            path, body, headers = bodies[n % len(bodies)]
            async with session.post(path, data=body, headers=headers) as answer:
                await answer.read()
                return None if answer.status == 200 else str(answer.status)

        await asyncio.gather(*(send(i, i) for i in range(concurrency)))  # open the connections
        result = await closed_loop(send, concurrency, seconds)
    return {"kind": kind, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("--kind", choices=KINDS, default="classifier")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.model, args.kind, args.concurrency, args.seconds))))


if __name__ == "__main__":
    main()
