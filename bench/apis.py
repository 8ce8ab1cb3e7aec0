"""Batched requests through every API, with each protocol's own client: serial calls of N images, images/s.

Usage: python -m bench.apis ADDRESS MODEL [--images 1024] [--seconds 3]  -> one JSON line

* ``tfclassify``: our ``ClassifierClient.classify``;
* ``tfserving_predict``: TensorFlow Serving's ``PredictionService.Predict`` stub (tensorflow-serving-api);
* ``oip_raw``: Triton's ``tritonclient.grpc`` ``infer``, every output as raw tensors;
* ``oip_classification``: the same with the classification extension (``class_count=1``: "score:index:label").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rate(call: Callable[[], object], images: int, seconds: float) -> float:
    """Images per second of back-to-back ``call()``s (after two warm-up calls)."""
    for _ in range(2):
        call()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        calls += 1
    return calls * images / (time.perf_counter() - started)


def measure(address: str, model: str, n: int, seconds: float) -> dict:
    import grpc
    import tensorflow as tf
    import tritonclient.grpc as triton
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfclassify.client import ClassifierClient

    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    out = {"images": n}
    with ClassifierClient(address) as client:
        out["tfclassify"] = rate(lambda: client.classify(images, model), n, seconds)
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict() -> object:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
            response = stub.Predict(request, timeout=60)
            return tf.make_ndarray(response.outputs["probabilities"])

        out["tfserving_predict"] = rate(predict, n, seconds)
    client = triton.InferenceServerClient(address)
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    out["oip_raw"] = rate(lambda: client.infer(model, [tensor]).as_numpy("probabilities"), n, seconds)
    wanted = [triton.InferRequestedOutput("probabilities", class_count=1)]
    out["oip_classification"] = rate(lambda: client.infer(model, [tensor], outputs=wanted).as_numpy("probabilities"),
                                     n, seconds)
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("model")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.address, args.model, args.images, args.seconds)))


if __name__ == "__main__":
    main()
