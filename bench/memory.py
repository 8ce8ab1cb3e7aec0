"""``python -m bench.memory`` (``make bench-memory``): the server's resident memory under maximum-size requests.

One server (the benchmark model, default flags unless ``--serve-args``), then:

1. warm-up: ordinary traffic (small and 4,096-image requests), then a trim interval, and the resident size then
   is the warmed-up level;
2. ``--rounds`` rounds of ``--concurrency`` requests at once, each as large as the server's message limit
   (64 MiB by default), of every kind a client can send that large: a float tensor through each API, a valid
   message with more images than a request may carry, and bytes that are not a message at all; the resident size
   is sampled every 5 ms for the peak;
3. ``--settle-s`` seconds with no traffic, and the resident size then.

Prints one table: warmed-up, peak and settled resident MiB, how the requests were answered, and the goal's
bounds (peak under the Deployment's memory limit with room to spare; settled within 10% of warmed up).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from bench.__main__ import MODEL, start_server, train_model
from tfclassify.common.tensors import to_tensor_proto
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.server.runtime.memory import resident_mib
from tfclassify.v1 import classifier_pb2 as pb

MAX_MESSAGE = 64 * 1024 * 1024
#: The memory limit of the Deployment in deploy/k8s/base.
DEPLOYMENT_LIMIT_MIB = 3072


def png_padded(image: np.ndarray, size: int) -> bytes:
    """``image`` as a PNG file of about ``size`` bytes (a text chunk fills it out)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * max(0, size - 900))
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def bodies(model: str, limit: int, max_images: int) -> dict[str, tuple[str, bytes]]:
    """Request kind -> (method, serialized request of about ``limit`` bytes) for ``model`` (uint8 28x28 pixels):
    one that is valid and runs (``max_images`` PNG files), three that are refused after decoding (too many
    images; float pixels through TensorFlow Serving's and the Open Inference Protocol's APIs), and bytes that
    are not a message."""
    rng = np.random.default_rng(0)
    png = png_padded(rng.integers(0, 256, (28, 28), dtype=np.uint8), (limit - 65536) // max_images)
    encoded = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=model))
    encoded.encoded.images.extend([png] * max_images)
    too_many = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=model))
    to_tensor_proto(np.zeros(((limit - 4096) // 784, 28, 28), np.uint8), out=too_many.tensor)
    floats = rng.uniform(0, 255, ((limit - 4096) // (784 * 4), 28, 28)).astype(np.float32)
    infer = oip.ModelInferRequest(model_name=model)
    infer.inputs.add(name="images", datatype="FP32", shape=list(floats.shape))
    infer.raw_input_contents.append(floats.tobytes())
    return {
        f"Classify, {max_images:,} PNG files": ("/tfclassify.v1.Classifier/Classify", encoded.SerializeToString()),
        "Classify, too many images": ("/tfclassify.v1.Classifier/Classify", too_many.SerializeToString()),
        "Predict, float pixels": ("/tensorflow.serving.PredictionService/Predict", _predict_bytes(model, floats)),
        "ModelInfer, float pixels": ("/inference.GRPCInferenceService/ModelInfer", infer.SerializeToString()),
        "Classify, not a message": ("/tfclassify.v1.Classifier/Classify", b"\xff" * (limit - 4096)),
    }


def _predict_bytes(model: str, images: np.ndarray) -> bytes:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_content=images.tobytes(),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                                            for d in images.shape])))
    return request.SerializeToString()


class PeakSampler:
    """Samples a process's resident size every ``interval_s`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = 0.005) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, resident_mib(self.pid))


def send_concurrently(address: str, requests: list[tuple[str, str, bytes]]) -> Counter:
    """Each (kind, method, body) request on its own connection, all at once; counts the answers by kind and
    status."""
    def one(request: tuple[str, str, bytes]) -> str:
        kind, method, body = request
        options = [("grpc.max_send_message_length", MAX_MESSAGE * 2), ("grpc.max_receive_message_length", MAX_MESSAGE * 2)]
        with grpc.insecure_channel(address, options=options) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(body, timeout=120)
                return f"{kind}: OK"
            except grpc.RpcError as exc:
                return f"{kind}: {exc.code().name}"

    with ThreadPoolExecutor(len(requests)) as pool:
        return Counter(pool.map(one, requests))


def warm_up(address: str, model: str) -> None:
    from tfclassify.client import ClassifierClient

    rng = np.random.default_rng(1)
    with ClassifierClient(address) as client:
        for n in (1, 64, 4096) * 20:
            client.classify(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), model)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=60.0, help="quiet time before the settled reading")
    parser.add_argument("--serve-args", default="", help="extra flags for tfclassify serve (one string)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = train_model(Path(tmp) / "repo")
        server, address, pid = start_server(repo, Path(tmp), args.serve_args.split())
        try:
            result = measure(address, pid, args.concurrency, args.rounds, args.settle_s)
        finally:
            server.terminate()
            server.wait(60)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def measure(address: str, pid: int, concurrency: int, rounds: int, settle_s: float,
            model: str = MODEL, max_images: int = 16384) -> dict:
    """Warm-up, ``rounds`` rounds of ``concurrency`` maximum-size requests, ``settle_s`` s quiet (see the module)."""
    warm_up(address, model)
    time.sleep(11)  # one trim interval (--memory-trim-interval-s 10 by default)
    warm = resident_mib(pid)
    kinds = bodies(model, MAX_MESSAGE, max_images)
    names = list(kinds)
    answers: Counter = Counter()
    with PeakSampler(pid) as sampler:
        for r in range(rounds):
            chosen = [names[(r + i) % len(names)] for i in range(concurrency)]
            answers.update(send_concurrently(address, [(name, *kinds[name]) for name in chosen]))
    peak = sampler.peak
    time.sleep(settle_s)
    settled = resident_mib(pid)
    return {"concurrency": concurrency, "rounds": rounds, "message_mib": MAX_MESSAGE / 2**20, "warm_mib": warm,
            "peak_mib": peak, "settled_mib": settled, "settle_s": settle_s, "answers": dict(answers)}


def table(r: dict) -> str:
    limit = f"{r['peak_mib'] / DEPLOYMENT_LIMIT_MIB:.0%} of the Deployment's {DEPLOYMENT_LIMIT_MIB / 1024:.0f} GiB limit"
    rows = [
        ("warmed-up resident size", f"{r['warm_mib']:,.0f} MiB"),
        (f"peak, {r['rounds']} rounds of {r['concurrency']} concurrent {r['message_mib']:.0f} MiB requests",
         f"{r['peak_mib']:,.0f} MiB ({limit})"),
        (f"settled, {r['settle_s']:.0f} s after", f"{r['settled_mib']:,.0f} MiB ({r['settled_mib'] / r['warm_mib'] - 1:+.1%} "
         "from warmed up; goal: within 10%)"),
    ]
    rows += [(f"  {answer}", f"{n}") for answer, n in sorted(r["answers"].items())]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    raise SystemExit(main())
