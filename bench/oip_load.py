"""Closed-loop Open Inference Protocol load: C concurrent callers, each sending
``ModelInfer`` requests of N images back to back for a fixed time, to any server
that speaks OIP over gRPC (ours, Triton).

Usage: python -m bench.oip_load ADDRESS MODEL [--concurrency 64] [--images 1] [--seconds 10]
       [--client bytes|tritonclient]  -> one JSON line

With ``--client bytes`` (the default) the requests are Triton's own protobuf
messages (``tritonclient.grpc``'s ``ModelInferRequest``: a UINT8 ``images`` tensor in ``raw_input_contents``, the
``probabilities`` output asked for), serialized once and sent as bytes; the
answers are not parsed after the first, which is checked. So the generator
spends as little of the shared CPU as it can, the same for every server. With
``--client tritonclient`` each call goes through ``tritonclient.grpc.aio``'s
``infer``, as a user of Triton's client sends it (a heavier client). Runs
in its own process: tritonclient's generated code and ours do not share one
protobuf runtime in every environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np
from tritonclient.grpc import service_pb2 as oip

from bench.closed_loop import closed_loop, grpc_bytes_load

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
    """The load of prebuilt request bytes over ``channels`` grpc.aio channels."""
    result = await grpc_bytes_load(address, METHOD, requests(model, images), concurrency, seconds, channels,
                                   timeout=30, warm_timeout=60, options=OPTIONS, check=lambda answer: _check(answer, images))
    return {**result, "images": images, "images_per_second": result["requests_per_second"] * images}


async def run_tritonclient(address: str, model: str, concurrency: int, images: int, seconds: float,
                           channels: int) -> dict:
    """The load as a tritonclient user makes it: ``tritonclient.grpc.aio``'s ``infer`` with an ``InferInput``
    built from a numpy array for each call and the answer read back with ``as_numpy``, over ``channels``
    clients (one channel each)."""
    from tritonclient.grpc import InferInput, InferRequestedOutput
    from tritonclient.grpc.aio import InferenceServerClient

    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (images, 28, 28), dtype=np.uint8) for _ in range(16)]
    clients = [InferenceServerClient(address, channel_args=OPTIONS) for _ in range(channels)]

    async def send(i: int, n: int) -> None:
        tensor = InferInput("images", [images, 28, 28], "UINT8")
        tensor.set_data_from_numpy(batches[n % len(batches)])
        answer = await clients[i % len(clients)].infer(
            model, [tensor], outputs=[InferRequestedOutput("probabilities")], client_timeout=30)
        if answer.as_numpy("probabilities").shape != (images, 10):
            raise SystemExit(f"oip_load: unexpected answer shape {answer.as_numpy('probabilities').shape}")

    await asyncio.gather(*(send(i, i) for i in range(channels)))  # warm the connections up
    result = await closed_loop(send, concurrency, seconds)
    for client in clients:
        await client.close()
    return {**result, "images": images, "images_per_second": result["requests_per_second"] * images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("model")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--client", choices=CLIENTS, default="bytes",
                        help="bytes: prebuilt requests over grpc.aio; tritonclient: its aio client's infer")
    args = parser.parse_args()
    channels = min(args.channels, args.concurrency)
    print(json.dumps(asyncio.run(CLIENTS[args.client](args.address, args.model, args.concurrency, args.images,
                                                      args.seconds, channels))))


CLIENTS = {"bytes": run, "tritonclient": run_tritonclient}


if __name__ == "__main__":
    main()
