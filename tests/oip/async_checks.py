"""Calls a tfclassify server with Triton's asyncio gRPC client (concurrent
``infer`` calls and one ``stream_infer`` stream) and prints the results as
JSON (tests/system/test_oip_api.py checks them). Runs in the project's venv, in a process of its own.

Usage: python async_checks.py ADDRESS DATA.npz (uint8 ``fashion`` [N, 28, 28], N >= 64)
"""

import asyncio
import json
import sys

import numpy as np
import tritonclient.grpc.aio as aioclient


def images_input(array):
    tensor = aioclient.InferInput("images", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


async def main(address, fashion):
    client = aioclient.InferenceServerClient(address)
    out = {"live": await client.is_server_live(), "ready": await client.is_model_ready("fashion")}

    async def one(i):
        result = await client.infer("fashion", [images_input(fashion[4 * i : 4 * i + 4])], request_id=str(i))
        return {"id": result.get_response().id, "probabilities": result.as_numpy("probabilities").tolist()}

    out["concurrent"] = await asyncio.gather(*(one(i) for i in range(16)))

    async def requests():
        for i, (model, start, stop) in enumerate([("fashion", 0, 2), ("nope", 0, 1), ("fashion", 2, 5)]):
            yield {"model_name": model, "inputs": [images_input(fashion[start:stop])], "request_id": str(i)}

    out["stream"] = []
    async for result, error in client.stream_infer(requests()):
        if error is not None:
            out["stream"].append({"error": error.message()})
        else:
            out["stream"].append(
                {"id": result.get_response().id, "probabilities": result.as_numpy("probabilities").tolist()}
            )
    await client.close()
    return out


data = np.load(sys.argv[2])
print(json.dumps(asyncio.run(main(sys.argv[1], data["fashion"]))))
