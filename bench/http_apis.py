"""Batched requests over HTTP with each protocol's own client: serial calls of N images, images/s.

Usage: python -m bench.http_apis URL MODEL [--images 1024] [--seconds 2]  -> one JSON line

* ``oip_binary``: Triton's ``tritonclient.http`` ``infer``, inputs and outputs in the binary tensor extension;
* ``oip_json``: the same with JSON tensors (``binary_data=False`` both ways);
* ``tfserving_json``: TensorFlow Serving's REST ``:predict`` with ``{"instances": ...}``, as its docs send it.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

import numpy as np

from bench.apis import rate


def measure(url: str, model: str, n: int, seconds: float) -> dict:
    import tritonclient.http as triton

    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    out: dict = {"images": n}
    client = triton.InferenceServerClient(url.removeprefix("http://"), connection_timeout=60, network_timeout=60)
    for name, binary in (("oip_binary", True), ("oip_json", False)):
        tensor = triton.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
        out[name] = rate(lambda t=tensor, w=wanted: client.infer(model, [t], outputs=w).as_numpy("probabilities"),
                         n, seconds)
    client.close()

    def predict() -> object:
        body = json.dumps({"instances": images.tolist()}).encode()
        request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return np.asarray([row["probabilities"] for row in json.loads(answer.read())["predictions"]])

    out["tfserving_json"] = rate(predict, n, seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.url, args.model, args.images, args.seconds)))


if __name__ == "__main__":
    main()
