"""A fuzzing harness for the server's request decoding, for all three APIs (hypothesis strategies).

Each case is one RPC: a structured request with hostile shapes, data types, sizes, values, names, versions and
encoded images (our ``Classify``, TensorFlow Serving's ``Predict``, the Open Inference Protocol's
``ModelInfer``), or bytes that are not a valid message at all, sent to any method. Every answer must be a
clean status (never INTERNAL or UNKNOWN) with a short message, and a well-behaved client calling alongside
must keep being answered.

``tests/system/test_fuzz.py`` runs a few thousand cases; ``make fuzz`` (``python -m bench.fuzzing --cases N``) runs
more and prints the cases run, the statuses, the server's RSS before and after, and the worst latency the
well-behaved client saw.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.server.runtime.memory import resident_mib
from tfclassify.v1 import classifier_pb2 as pb

#: Statuses that mean "the server failed", which no request may cause.
SERVER_FAULTS = {"INTERNAL", "UNKNOWN"}
#: The longest status message a client should get (the server clips echoes to 1,000 characters).
MAX_DETAILS = 1200

METHODS = {
    "classify": "/tfclassify.v1.Classifier/Classify",
    "predict": "/tensorflow.serving.PredictionService/Predict",
    "infer": "/inference.GRPCInferenceService/ModelInfer",
    "metadata": "/tfclassify.v1.Classifier/GetModelMetadata",
    "tfs_metadata": "/tensorflow.serving.PredictionService/GetModelMetadata",
    "model_metadata": "/inference.GRPCInferenceService/ModelMetadata",
    "statistics": "/inference.GRPCInferenceService/ModelStatistics",
    "feedback": "/tfclassify.v1.Classifier/Feedback",
}

HUGE = [2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1]
dims = st.one_of(st.integers(-3, 3), st.integers(0, 40), st.sampled_from([28, 784, *HUGE, -(2**63)]))
shapes = st.one_of(st.sampled_from([[1, 28, 28], [2, 784], [3, 28, 28, 1], [0, 28, 28]]), st.lists(dims, max_size=5))
models = st.one_of(st.sampled_from(["fashion", "digits", ""]), st.text(max_size=40),
                   st.just("m" * 5000))
small_bytes = st.binary(max_size=3000)


def _png(width: int, height: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


VALID_PNG = _png(28, 28)
IMAGES = [VALID_PNG, _png(1, 1), _png(300, 2), _png(28, 28, "RGBA"), b"GIF89a" + bytes(20), b"\xff\xd8\xff" + bytes(30)]


@st.composite
def encoded_images(draw) -> bytes:
    image = bytearray(draw(st.sampled_from(IMAGES)))
    for _ in range(draw(st.integers(0, 3))):  # flip a few bytes: headers, sizes, checksums
        if image:
            image[draw(st.integers(0, len(image) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        image = image[: draw(st.integers(0, len(image)))]
    return bytes(image)


@st.composite
def content_for(draw, shape: list[int], itemsize: int) -> bytes:
    """Bytes of the size the shape asks for when that is small, else anything."""
    size = int(np.prod([max(d, 0) for d in shape], dtype=object)) * itemsize if shape else itemsize
    if 0 <= size <= 100_000 and draw(st.booleans()):
        return draw(st.binary(min_size=size, max_size=size)) if size <= 3000 else bytes(size)
    return draw(small_bytes)


@st.composite
def classify_requests(draw) -> bytes:
    request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=draw(models)))
    if draw(st.booleans()):
        request.model_spec.version = draw(st.integers(-(2**63), 2**63 - 1))
    elif draw(st.booleans()):
        request.model_spec.version_label = draw(st.text(max_size=20))
    if draw(st.integers(0, 3)) == 0:
        request.encoded.images.extend(draw(st.lists(encoded_images(), max_size=4)))
    else:
        dtype = draw(st.one_of(st.sampled_from([pb.UINT8, pb.FLOAT32]), st.integers(-5, 40)))
        shape = draw(shapes)
        request.tensor.dtype = dtype
        request.tensor.shape.extend(shape)
        request.tensor.content = draw(content_for(shape, 4 if dtype == pb.FLOAT32 else 1))
    request.top_k = draw(st.integers(0, 2**32 - 1))
    request.return_probabilities = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:  # live accuracy: true classes of any length and value, kept predictions
        request.true_classes.extend(draw(st.lists(true_class, max_size=6)))
        request.keep_for_feedback = draw(st.booleans())
        request.request_id = draw(st.sampled_from(["", "a", "b", "x" * 300]))
    return request.SerializeToString()


true_class = st.one_of(st.integers(-3, 12), st.sampled_from([-(2**31), 2**31 - 1]))


@st.composite
def feedback_requests(draw) -> bytes:
    return pb.FeedbackRequest(model_name=draw(models), request_id=draw(st.sampled_from(["", "a", "b", "\x00"])),
                              true_classes=draw(st.lists(true_class, max_size=6))).SerializeToString()


@st.composite
def predict_requests(draw) -> bytes:
    from tensorflow_serving.apis import predict_pb2  # the TF Serving protos (tensorflow-serving-api)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(models)
    request.model_spec.signature_name = draw(st.sampled_from(["", "serving_default", "predict", "\x00"]))
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
    for name in draw(st.lists(st.sampled_from(["images", "keras_tensor", "x", ""]), max_size=2, unique=True)):
        tensor = request.inputs[name]
        tensor.dtype = draw(st.one_of(st.sampled_from([1, 4, 7, 9]), st.integers(-3, 40)))  # FLOAT, UINT8, ...
        shape = draw(shapes)
        for d in shape:
            tensor.tensor_shape.dim.add(size=d)
        choice = draw(st.integers(0, 3))
        if choice == 0:
            tensor.tensor_content = draw(content_for(shape, 4 if tensor.dtype == 1 else 1))
        elif choice == 1:
            tensor.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50)))
        elif choice == 2:
            tensor.float_val.extend(draw(st.lists(st.floats(width=32), max_size=50)))
        else:
            tensor.string_val.extend(draw(st.lists(encoded_images(), max_size=3)))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["scores", "classes", "probabilities", "?"]),
                                               max_size=2)))
    return request.SerializeToString()


@st.composite
def infer_requests(draw) -> bytes:
    request = oip.ModelInferRequest(model_name=draw(models), id=draw(st.text(max_size=10)))
    request.model_version = draw(st.one_of(st.sampled_from(["", "1", "2", "01", "-1", "²", "①", "１", " 1"]),
                                           st.text(max_size=6)))
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(name=draw(st.sampled_from(["images", "x", ""])))
        tensor.datatype = draw(st.one_of(st.sampled_from(["UINT8", "FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16",
                                                          "BF16", ""]), st.text(max_size=6)))
        shape = draw(shapes)
        tensor.shape.extend(shape)
        choice = draw(st.integers(0, 3))
        if choice == 0:
            request.raw_input_contents.append(draw(content_for(shape, 4 if tensor.datatype == "FP32" else 1)))
        elif choice == 1:
            tensor.contents.uint_contents.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=50)))
        elif choice == 2:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=50)))
        else:
            tensor.contents.bytes_contents.extend(draw(st.lists(encoded_images(), max_size=3)))
    if draw(st.booleans()):
        output = request.outputs.add(name=draw(st.sampled_from(["probabilities", "scores", "?", ""])))
        output.parameters["classification"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    if draw(st.booleans()):
        request.parameters["binary_data_output"].bool_param = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        parameter = request.parameters["true_classes"]
        if draw(st.booleans()):
            parameter.string_param = draw(st.one_of(st.text(max_size=12), st.sampled_from(["1,2", "0", "-1,9", "3,,4"])))
        else:
            parameter.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    return request.SerializeToString()


@st.composite
def raw_garbage(draw) -> tuple[str, bytes]:
    return draw(st.sampled_from(sorted(METHODS.values()))), draw(small_bytes)


#: (method path, serialized request) for any case.
cases = st.one_of(
    classify_requests().map(lambda b: (METHODS["classify"], b)),
    predict_requests().map(lambda b: (METHODS["predict"], b)),
    infer_requests().map(lambda b: (METHODS["infer"], b)),
    feedback_requests().map(lambda b: (METHODS["feedback"], b)),
    raw_garbage(),
)


@dataclass
class Tally:
    """What a fuzzing run saw."""

    statuses: Counter = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    #: The requests behind ``faults`` (method, serialized body), to replay.
    fault_requests: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def send(channel: grpc.Channel, method: str, body: bytes, tally: Tally, timeout: float = 30) -> None:
    """One case: record its status, and any answer that is a server fault or too long a message."""
    call = channel.unary_unary(method)  # bytes in, bytes out: the server decodes what it gets
    try:
        call(body, timeout=timeout)
        code, details = "OK", ""
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    tally.statuses[code] += 1
    if code in SERVER_FAULTS or len(details) > MAX_DETAILS:
        tally.faults.append(f"{method} {code} {details[:300]!r} request={body[:200]!r}")
        tally.fault_requests.append((method, body))


class Bystander:
    """A well-behaved client classifying one image every ``interval`` s in a thread: its worst latency and its
    failures while the fuzzing runs."""

    def __init__(self, address: str, interval: float = 0.02) -> None:
        self.address, self.interval = address, interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from tfclassify.client import ClassifierClient, TfclassifyError

        image = np.zeros((1, 28, 28), np.uint8)
        with ClassifierClient(self.address, timeout=30, retries=0) as client:  # every failure is seen
            while not self._stop.wait(self.interval):
                started = time.perf_counter()
                try:
                    client.classify(image, "fashion")
                except TfclassifyError as exc:
                    self.failures.append(str(exc))
                self.latencies.append(time.perf_counter() - started)


def fuzz(address: str, examples: int, seed: int | None = None) -> Tally:
    """Run ``examples`` hypothesis cases against the server at ``address``."""
    tally = Tally()
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                  ("grpc.max_receive_message_length", -1)]) as channel:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
                  suppress_health_check=list(HealthCheck), phases=["generate"])
        @given(case=cases)
        def one(case: tuple[str, bytes]) -> None:
            send(channel, *case, tally)

        with warnings.catch_warnings():
            # The bystander's thread (gRPC inside) touches the global random state while cases are drawn.
            warnings.filterwarnings("ignore", message="Do not use the `random` module inside strategies")
            one()
    return tally


def warmed_up_rss(server, ready_timeout: float = 60) -> float:
    """Wait until ``server`` (a ``conftest.ServerProcess``) is ready, warm it up with a few calls, and return its
    resident memory (MiB) then: the level the fuzzing is measured against."""
    with server.client() as client:
        client.wait_for_ready(ready_timeout)
        client.classify(np.zeros((64, 28, 28), np.uint8), "fashion")
    time.sleep(1)
    return resident_mib(server.proc.pid)


def main() -> int:
    """``make fuzz``: start a server on the test models, fuzz it, print the figures."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' server helpers
    from conftest import FASHION_DIR, ServerProcess, tfclassify_cmd

    parser = argparse.ArgumentParser(prog="make fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--model-repo", type=Path, help="a repository with a `fashion` model (else one is trained)")
    args = parser.parse_args()
    import subprocess

    with tempfile.TemporaryDirectory(prefix="tfclassify-fuzz-") as tmp:
        repo = args.model_repo
        if repo is None:
            repo = Path(tmp) / "repo"
            subprocess.run(tfclassify_cmd("train", "--dataset", "fashion_mnist", "--data-dir", str(FASHION_DIR),
                                          "--model-repo", str(repo), "--name", "fashion", "--epochs", "1"),
                           check=True, stdout=subprocess.DEVNULL)
        server = ServerProcess(repo, Path(tmp))
        try:
            before = peak = warmed_up_rss(server, ready_timeout=120)
            # This process holds TensorFlow (conftest; the Predict strategy's protos): frozen, so that its own
            # full collections, ~200 ms each, do not count as the bystander's latency (as in bench.soak).
            from tensorflow_serving.apis import predict_pb2  # noqa: F401

            gc.collect()
            gc.freeze()
            started = time.perf_counter()
            tally = Tally()
            with Bystander(server.address) as bystander:
                while tally.cases < args.cases:  # in rounds, to sample the RSS between them
                    round_tally = fuzz(server.address, min(1000, args.cases - tally.cases))
                    tally.statuses.update(round_tally.statuses)
                    tally.faults.extend(round_tally.faults)
                    tally.fault_requests.extend(round_tally.fault_requests)
                    peak = max(peak, resident_mib(server.proc.pid))
            seconds = time.perf_counter() - started
            time.sleep(2)
            after = resident_mib(server.proc.pid)
        finally:
            server.stop()
            if tally.faults:  # the server's tracebacks, and the requests to replay them
                print("\n".join(line for line in server.log().splitlines() if "ERROR" in line or line.startswith(
                    ("Traceback", "  File", "    ", "tfclassify", "ValueError", "TypeError", "Overflow")))[-6000:])
                Path("fuzz-faults.txt").write_text("".join(f"{m} {b.hex()}\n" for m, b in tally.fault_requests))
    worst = max(bystander.latencies) * 1e3 if bystander.latencies else float("nan")
    print(f"cases: {tally.cases:,} in {seconds:.0f} s; statuses: {dict(tally.statuses.most_common())}")
    print(f"server faults (INTERNAL/UNKNOWN or messages over {MAX_DETAILS} characters): {len(tally.faults)}")
    for fault in tally.faults[:10]:
        print("  ", fault)
    print(f"RSS: {before:.0f} MiB after warm-up, {peak:.0f} MiB peak, {after:.0f} MiB after ({after / before - 1:+.1%})")
    print(f"well-behaved client: {len(bystander.latencies):,} requests, {len(bystander.failures)} failed, "
          f"p50 {np.median(bystander.latencies) * 1e3:.1f} ms, worst {worst:.0f} ms")
    return 1 if tally.faults or bystander.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
