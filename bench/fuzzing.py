"""A fuzzing harness for the server's request decoding, for all three APIs (hypothesis strategies).

Each case is one RPC: a structured request with hostile shapes, data types, sizes, values, names, versions and
encoded images (our ``Classify``, TensorFlow Serving's ``Predict``, the Open Inference Protocol's
``ModelInfer``), or bytes that are not a valid message at all, sent to any method. Every answer must be a
clean status (never INTERNAL or UNKNOWN) with a short message, and a well-behaved client calling alongside
must keep being answered.

The HTTP/REST port gets the same (``fuzz_http``): hostile requests for every route kind (``/classify``, the
Classifier service's methods, TensorFlow Serving's ``/v1/models/...``, the Open Inference Protocol's ``/v2/...``)
over a keep-alive connection, with malformed, huge, deeply nested or wrongly typed JSON, bad base64, lying binary
data lengths, odd content types, charsets, paths, methods and deadline headers, and raw requests whose framing is
broken. No answer may be a 5xx (but a 504 for the client's own deadline and a 501 for ``:regress``), and every error
must be the JSON ``{"error": ..., "code": ...}`` (but the HTTP parser's own text/plain 400s for broken framing).

``tests/system/test_fuzz.py`` runs a few thousand cases; ``make fuzz`` (``python -m bench.fuzzing --cases N``) runs
more and prints the cases run, the statuses, the server's RSS before and after, and the worst latency the
well-behaved client saw.
"""

from __future__ import annotations

import argparse
import base64
import gc
import http.client
import io
import json
import socket
import string
import sys
import threading
import time
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import json_format
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


# -- HTTP/REST ------------------------------------------------------------------------------------------------------
# The same hostility over HTTP/1.1 (stdlib http.client, one keep-alive connection): every route kind, with bodies
# that are malformed, huge, deeply nested or of the wrong types, lying binary-extension lengths, odd content types,
# charsets, paths, percent-encodings, methods and deadline headers. Every answer must be under 500 (but a deadline
# the client set, 504, and :regress on a classifier, 501) and every error a JSON {"error": ..., "code": ...}.

HTTP_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
CLASSIFIER_METHODS = ["Classify", "GetModelMetadata", "ListModels", "GetModelStatus", "Feedback", "ClassifyStream",
                      "classify", "Nope", ""]
#: Methods aiohttp's parser knows (it refuses others with a text/plain 400, as malformed framing).
STANDARD_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT"}
#: Past this, a request line or header is refused by aiohttp's parser itself (a text/plain 400, not our JSON).
PARSER_LINE_LIMIT = 8190


@dataclass(frozen=True)
class HttpCase:
    """One HTTP request: ``deadline`` when it sets one (the ``Request-Timeout`` header, Triton's ``timeout``)."""

    method: str
    path: str
    headers: tuple[tuple[str, str | bytes], ...] = ()
    body: bytes = b""
    deadline: bool = False

    def describe(self) -> str:
        path = self.path if len(self.path) <= 300 else f"{self.path[:150]}...({len(self.path):,})...{self.path[-150:]}"
        return f"{self.method} {path} headers={list(self.headers)!r:.300} body={self.body[:200]!r}"


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


segments = st.one_of(
    st.sampled_from(["fashion"] * 4 + ["digits", "", "%", "%zz", "%ff", "%00", "%2F", "..", ".", "%2e%2e", "a%20b",
                                       "%C3%28", "~", ":predict", "versions", "labels", "m" * 9000]),
    models.map(_quote),
    st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%", max_size=20),
)
path_versions = st.one_of(st.sampled_from(["1", "2", "0", "-1", "01", "9" * 25, "1.5", "%31", _quote("\uff11"), "", "x"]),
                          st.integers(-(2**64), 2**64).map(str))
queries = st.one_of(st.just(""), st.sampled_from(
    ["?top_k=1", "?top_k=0", "?top_k=-1", "?top_k=99999999", "?top_k=%ff", "?top_k", "?&&==", "?top_k=1&top_k=2",
     "?top_k=" + "9" * 40, "?" + "a=1&" * 1500, "?%", "#frag"]))
timeouts = st.one_of(st.sampled_from(
    ["0", "-1", "1e9", "nan", "inf", "-inf", "0.000001", "1e-9", " 2 ", "1,5", "10", "0x10", "9" * 40, "", "1..2",
     ".5", "5.", "30", "0.0", "1e3", "\t3"]), st.text(alphabet=string.printable.strip(), max_size=12))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(HUGE),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
b64_strings = st.one_of(
    encoded_images().map(lambda b: base64.b64encode(b).decode()),
    encoded_images().map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.sampled_from(["", "=", "====", "!!!", "aGVsbG8", "aGVsbG8=x", "aaaaa", "data:image/png;base64,iVBORw0KGgo",
                     "_-_-", "\u00e9\u00e9", " aGk= "]),
    st.text(max_size=30),
)
datatypes = st.one_of(st.sampled_from(["UINT8", "FP32", "FP64", "INT64", "INT8", "BYTES", "BOOL", "FP16", "BF16",
                                       "uint8", ""]), st.text(max_size=6), json_scalars)


@st.composite
def nested_numbers(draw) -> object:
    """A tensor as nested JSON arrays: of the model's shape or not, of one value or a few, ragged or not."""
    shape = draw(st.one_of(st.sampled_from([[28, 28], [784], [1, 28, 28], [2, 28, 28, 1], [28], [0], [1, 0]]),
                           st.lists(st.integers(0, 4), max_size=4)))
    fill = draw(st.one_of(st.integers(0, 255), st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([-1, 256, 2**64, 1e308, "1", None, True, [], {}, {"b64": "AA=="}])))
    value: object = fill
    for d in reversed(shape):
        value = [value] * d
    if draw(st.booleans()):
        value = json.loads(json.dumps(value))  # independent rows, to be made ragged
        node = value
        while isinstance(node, list) and node and isinstance(node[0], list):
            node = node[0]
        if isinstance(node, list) and node:
            node.pop() if draw(st.booleans()) else node.append(draw(json_scalars))
    return value


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw, document: st.SearchStrategy) -> bytes:
    """``document`` as JSON, often spoiled: truncated, with a stray byte, not UTF-8, huge or deeply nested."""
    choice = draw(st.integers(0, 15))
    if choice <= 8:
        return _dumps(draw(document))
    if choice == 9:
        body = _dumps(draw(document))
        return body[: draw(st.integers(0, len(body)))]
    if choice == 10:
        body = bytearray(_dumps(draw(document)))
        body.insert(draw(st.integers(0, len(body))), draw(st.integers(0, 255)))
        return bytes(body)
    if choice == 11:
        depth = draw(st.sampled_from([100, 1023, 1024, 1025, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"inputs":[', b"]}")]))
        return opener * depth + b"0" + closer * draw(st.sampled_from([depth, 0, depth // 2]))
    if choice == 12:
        n = draw(st.sampled_from([10_000, 300_000]))
        return draw(st.sampled_from([
            b'{"instances": [' + b",".join([b"0"] * n) + b"]}",
            b'{"inputs": [{"name": "images", "shape": [' + b"1," * n + b'1], "datatype": "UINT8", "data": [0]}]}',
            b'{"instances": ["' + b"A" * (n * 4) + b'"]}',
            b'{"modelSpec": {"name": "' + b"m" * n + b'"}}',
            b'{"instances": [' + b"9" * n + b"]}",
            b'{"a": 1' + b', "a": 1' * (n // 10) + b"}",
        ]))
    if choice == 13:
        return draw(st.sampled_from([b"", b"null", b"[]", b'""', b"NaN", b'{"a": NaN}', b'{"a": Infinity}',
                                     b"\xef\xbb\xbf{}", b'{"a": 1,}', b"{'a': 1}", b'{"\xff": 1}', b"\x00",
                                     '{"instances": "\u00e9"}'.encode("latin-1"), b'{"a": "\\ud800"}',
                                     b'{"instances": [1e999]}', b'{"instances": [-0]}']))
    if choice == 14:
        return _dumps(draw(json_values))
    return draw(small_bytes)


@st.composite
def tfs_documents(draw) -> object:
    """TensorFlow Serving REST bodies: row (instances) and columnar (inputs) format, classify's examples."""
    tensor = st.one_of(nested_numbers(), st.lists(st.fixed_dictionaries({"b64": b64_strings}), max_size=3),
                       st.fixed_dictionaries({"images": nested_numbers()}), json_values)
    doc: dict = {}
    if draw(st.booleans()):
        doc["signature_name"] = draw(st.one_of(st.sampled_from(["serving_default", "predict", "classify", ""]),
                                               json_scalars))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        doc["instances"] = draw(tensor)
    elif kind == 1:
        doc["inputs"] = draw(tensor)
    elif kind == 2:
        doc["instances"] = draw(st.lists(st.one_of(st.fixed_dictionaries({"b64": b64_strings}),
                                                   st.fixed_dictionaries({"images": st.fixed_dictionaries(
                                                       {"b64": b64_strings})})), max_size=3))
    elif kind == 3:
        doc["examples"] = draw(st.lists(st.dictionaries(st.sampled_from(["image", "images", "x"]), st.one_of(
            st.fixed_dictionaries({"b64": b64_strings}), json_values), max_size=2), max_size=3))
        if draw(st.booleans()):
            doc["context"] = draw(json_values)
    elif kind == 4:
        doc["instances"], doc["inputs"] = draw(tensor), draw(tensor)
    else:
        doc = draw(st.dictionaries(st.sampled_from(["instances", "inputs", "examples", "signature_name", "x"]),
                                   json_values, max_size=3))
    return doc


@st.composite
def oip_tensor(draw) -> tuple[dict, bytes]:
    """One Open Inference Protocol input: JSON ``data`` or binary (its ``binary_data_size`` true or lying)."""
    entry: dict = {}
    for key, strategy in (("name", st.one_of(st.sampled_from(["images", "x", ""]), json_scalars)),
                          ("datatype", datatypes),
                          ("shape", st.one_of(shapes, json_values))):
        if draw(st.integers(0, 7)):
            entry[key] = draw(strategy)
    binary = b""
    if draw(st.booleans()):
        shape = entry.get("shape") if isinstance(entry.get("shape"), list) else []
        itemsize = 4 if entry.get("datatype") == "FP32" else 1
        shape = [d for d in shape if isinstance(d, int) and not isinstance(d, bool)]
        binary = draw(content_for(shape, itemsize))
        size: object = len(binary)
        if draw(st.integers(0, 2)) == 0:  # a lie
            size = draw(st.one_of(st.integers(-5, len(binary) + 5), st.sampled_from([*HUGE, -(2**63), 1.5, "4",
                                                                                     None, True])))
        entry["parameters"] = {"binary_data_size": size}
        if draw(st.integers(0, 5)) == 0:
            entry["data"] = [0]
    else:
        entry["data"] = draw(st.one_of(nested_numbers(), st.lists(b64_strings, max_size=3), json_values))
        if draw(st.integers(0, 5)) == 0:
            entry["parameters"] = draw(json_values)
    return entry, binary


@st.composite
def oip_bodies(draw) -> tuple[bytes, list[tuple[str, str | bytes]], bool]:
    """(body, headers, sets a deadline) of a ``/v2/models/.../infer`` request."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_bodies(json_values)), [], False
    tensors = draw(st.lists(oip_tensor(), max_size=3))
    doc: dict = {"inputs": [t for t, _ in tensors]} if draw(st.integers(0, 9)) else {}
    if draw(st.booleans()):
        doc["id"] = draw(json_scalars)
    if draw(st.booleans()):
        doc["outputs"] = draw(st.one_of(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["probabilities", "scores", "?", ""])},
            optional={"parameters": st.dictionaries(st.sampled_from(["classification", "binary_data", "x"]),
                                                    json_scalars, max_size=2)}), max_size=2), json_values))
    if draw(st.booleans()):
        doc["parameters"] = draw(st.dictionaries(
            st.sampled_from(["binary_data_output", "timeout", "true_classes", "priority", "x"]),
            st.one_of(json_scalars, st.sampled_from(["1,2", "0", "-1,9", "3,,4"]), json_values), max_size=3))
    deadline = "timeout" in doc.get("parameters", {})
    header = _dumps(doc)
    binary = b"".join(b for _, b in tensors)
    headers: list[tuple[str, str | bytes]] = []
    if binary or draw(st.integers(0, 3)) == 0:
        length = draw(st.one_of(
            st.just(str(len(header))), st.just(str(len(header))),
            st.integers(-5, len(header) + len(binary) + 5).map(str),
            st.sampled_from(["", "abc", " 12 ", "1e3", "-0", "9" * 30, "0x10", str(2**64)]),
            st.just("\uff11\uff12".encode())))
        headers.append(("Inference-Header-Content-Length", length))
    if draw(st.integers(0, 4)) == 0:
        headers.append(("Accept-Encoding", draw(st.sampled_from(["gzip", "deflate", "br", "gzip;q=0", "*", "x"]))))
    return header + binary, headers, deadline


@st.composite
def classifier_json(draw) -> bytes:
    """Our Classifier's messages in protobuf's JSON mapping: hostile protobuf requests converted, or JSON documents
    with the fields' names and any values."""
    if draw(st.booleans()):
        message = pb.ClassifyRequest.FromString(draw(classify_requests()))
        return json_format.MessageToJson(message).encode()
    doc = draw(st.dictionaries(
        st.sampled_from(["modelSpec", "model_spec", "encoded", "tensor", "topK", "returnProbabilities",
                         "trueClasses", "requestId", "modelName", "x"]),
        st.one_of(json_values, st.fixed_dictionaries({"images": st.lists(b64_strings, max_size=2)}),
                  st.fixed_dictionaries({"name": st.one_of(models, json_scalars)},
                                        optional={"version": json_scalars, "versionLabel": json_scalars}),
                  st.fixed_dictionaries({"dtype": st.one_of(st.sampled_from(["UINT8", "FLOAT32", "X"]), json_scalars),
                                         "shape": st.one_of(shapes, json_values), "content": b64_strings})),
        max_size=4))
    return _dumps(doc)


@st.composite
def multipart_bodies(draw) -> tuple[bytes, str]:
    """(body, content type) of a multipart form of image files, often malformed."""
    boundary = draw(st.sampled_from(["b0undary", "x", "-" * 70, "a b", "é"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        disposition = draw(st.sampled_from(['form-data; name="image"; filename="a.png"', 'form-data; name="image"',
                                            "form-data", "attachment", 'form-data; filename="\\"x']))
        data = draw(st.one_of(encoded_images(), small_bytes))
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n"
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.integers(0, 3)) else b"")
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                         "multipart/form-data; boundary=other", "multipart/mixed; boundary=x",
                                         f'multipart/form-data; boundary="{boundary}"']))
    return body, content_type


content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/json; charset=UTF_8",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "application/json; charset=",
    'application/json; charset="utf-8"', "application/json;;;", "application/x-protobuf", "application/protobuf",
    "application/octet-stream", "multipart/form-data", "text/plain", "image/png", "", "*/*", "json", "a/b/c",
    "application/json; charset=ébc", "application/json; boundary=x; charset=ascii"])


@st.composite
def http_cases(draw) -> HttpCase:
    """Any route kind, with a body and headers for it (or for another), under an odd method now and then."""
    kind = draw(st.sampled_from(["classify", "classify", "classifier", "classifier", "tfs", "tfs", "tfs", "oip",
                                 "oip", "oip", "v2get", "v1get", "odd"]))
    headers: list[tuple[str, str | bytes]] = []
    content_type: str | None = None
    method, deadline = "POST", False
    model = draw(segments)
    if kind == "classify":
        path = "/classify/" + model + draw(st.sampled_from(["", "", "/versions/", "/labels/", "/", "/x/y"]))
        if path.endswith("/versions/"):
            path += draw(path_versions)
        elif path.endswith("/labels/"):
            path += draw(segments)
        path += draw(queries)
        if draw(st.integers(0, 3)) == 0:
            body, content_type = draw(multipart_bodies())
        else:
            body = draw(st.one_of(encoded_images(), encoded_images(), small_bytes, st.just(b""),
                                  st.just(VALID_PNG * 400)))
            content_type = draw(st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", None]))
        if draw(st.integers(0, 3)) == 0:
            headers.append(("X-Request-Id", draw(st.sampled_from(["a", "x" * 5000, "é", " "]))))
    elif kind == "classifier":
        path = "/tfclassify.v1.Classifier/" + draw(st.sampled_from(CLASSIFIER_METHODS)) + draw(queries)
        if draw(st.booleans()):
            body = draw(st.one_of(classify_requests(), feedback_requests(), small_bytes))
            content_type = draw(st.sampled_from(["application/x-protobuf", "application/protobuf",
                                                 "application/octet-stream"]))
        else:
            body = draw(json_bodies(json_values)) if draw(st.integers(0, 3)) == 0 else draw(classifier_json())
            content_type = "application/json"
    elif kind == "tfs":
        path = "/v1/models/" + model + draw(st.sampled_from(["", "", "/versions/1", "/labels/stable", "/versions/",
                                                             "/labels/", "/versions/x"]))
        if path.endswith("/versions/"):
            path += draw(path_versions)
        path += draw(st.sampled_from([":predict", ":predict", ":classify", ":regress", ":nope", "", "/metadata"]))
        body = draw(json_bodies(tfs_documents()))
        content_type = "application/json"
    elif kind == "oip":
        version = draw(st.one_of(st.just(""), st.just(""), path_versions.map(lambda v: "/versions/" + v)))
        path = "/v2/models/" + model + version + "/infer"
        body, extra, deadline = draw(oip_bodies())
        headers.extend(extra)
        content_type = draw(st.sampled_from(["application/json", "application/octet-stream", None]))
    elif kind in ("v2get", "v1get"):
        method, body = "GET", b""
        if kind == "v2get":
            path = draw(st.sampled_from(["/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/v2/models/stats",
                                         "/v2/models/" + model, "/v2/models/" + model + "/ready",
                                         "/v2/models/" + model + "/config", "/v2/models/" + model + "/stats",
                                         "/v2/models/" + model + "/versions/" + draw(path_versions) + "/ready",
                                         "/v2/models/" + model + "/versions/" + draw(path_versions)]))
        else:
            path = "/v1/models/" + model + draw(st.sampled_from(["", "/metadata", "/versions/1", "/labels/x/metadata",
                                                                 "/versions/" + draw(path_versions)]))
        path += draw(queries)
    else:
        path = draw(st.one_of(st.sampled_from(["/", "//", "/v1", "/v1/", "/v2/models", "/classify", "/classify/",
                                               "/metrics", "/../etc/passwd", "/%2e%2e/", "/%00", "*", "/v2/health",
                                               "/tfclassify.v1.Classifier", "/" + "a" * 9000]),
                              st.lists(segments, max_size=4).map(lambda s: "/" + "/".join(s))))
        body = draw(st.one_of(small_bytes, json_bodies(json_values)))
    if draw(st.integers(0, 5)) == 0:
        method = draw(st.sampled_from(HTTP_METHODS))
    if draw(st.integers(0, 5)) == 0:
        content_type = draw(content_types)
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if draw(st.integers(0, 4)) == 0:
        headers.append(("Request-Timeout", draw(timeouts)))
        deadline = True
    if draw(st.integers(0, 15)) == 0:
        headers.append(("Authorization", draw(st.sampled_from(["Bearer x", "Bearer", "Basic Og==", "é" * 3]))))
    return HttpCase(method, path, tuple(headers), body, deadline)


@st.composite
def raw_http(draw) -> bytes:
    """Whole requests as bytes, framing included: bad request lines and headers, lying or conflicting lengths,
    broken chunked encoding, bodies over the size limit (each sent on a connection of its own, then half-closed)."""
    path = draw(st.sampled_from(["/classify/fashion", "/v1/models/fashion:predict", "/v2/models/fashion/infer",
                                 "/tfclassify.v1.Classifier/Classify", "/v2/health/ready"]))
    body = draw(st.one_of(st.just(VALID_PNG), small_bytes, st.just(b'{"instances": [[0]]}')))
    line = draw(st.sampled_from([
        f"POST {path} HTTP/1.1", f"POST {path} HTTP/1.0", f"POST {path} HTTP/9.9", f"POST {path}", f"POST  {path} HTTP/1.1",
        f"P\x00ST {path} HTTP/1.1", f"POST {path}\x7f HTTP/1.1", f"POST {path} http/1.1", f"POST http://x{path} HTTP/1.1",
        f"POST {path}?{'a' * 9000} HTTP/1.1", f"POST {path} HTTP/1.1 extra", "", " ", "\x16\x03\x01\x02\x00"]))
    headers = ["Host: x", "Connection: close"]
    framing = draw(st.sampled_from(["length", "length", "short", "long", "huge", "negative", "two", "chunked",
                                    "bad-chunk", "both", "none", "list"]))
    if framing in ("length", "both"):
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "short":
        headers.append(f"Content-Length: {max(len(body) - 3, 0)}")
    elif framing == "long":
        headers.append(f"Content-Length: {len(body) + 100}")
    elif framing == "huge":
        headers.append(f"Content-Length: {draw(st.sampled_from([2**31, 2**40, 2**64, 10**30]))}")
    elif framing == "negative":
        headers.append("Content-Length: -1")
    elif framing == "two":
        headers += [f"Content-Length: {len(body)}", "Content-Length: 1"]
    elif framing == "list":
        headers.append(f"Content-Length: {len(body)}, {len(body)}")
    if framing in ("chunked", "bad-chunk", "both"):
        headers.append("Transfer-Encoding: chunked")
        if framing == "bad-chunk":
            body = draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"ffffffffffffffffffff\r\n", b"5\r\nabc\r\n0\r\n\r\n",
                                         b"3;ext=" + b"x" * 9000 + b"\r\nabc\r\n0\r\n\r\n"]))
        else:
            body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    extra = draw(st.lists(st.sampled_from([
        "X: " + "y" * 9000, "Bad Header: 1", "NoColon", " folded: continuation", "X-\x01: 1", ": empty-name",
        "Content-Type: application/json; charset=utf-16", "Inference-Header-Content-Length: 5",
        "Request-Timeout: 0.001", "Expect: 100-continue", "Transfer-Encoding: gzip", "Host: a", "Upgrade: h2c",
        "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]), max_size=3))
    extra += [f"X-Many-{i}: 1" for i in range(draw(st.sampled_from([0, 0, 150])))]
    return ("\r\n".join([line, *headers, *extra]) + "\r\n\r\n").encode("latin-1") + body


def _error_body_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why an error answer is not our JSON error (None when it is)."""
    if not content_type.startswith("application/json"):
        return f"an error ({status}) with Content-Type {content_type!r}, not JSON"
    try:
        document = json.loads(body)
    except ValueError:
        return "an error body that is not JSON"
    if not (isinstance(document, dict) and isinstance(document.get("error"), str)
            and isinstance(document.get("code"), str)):
        return "an error body without a string \"error\" and \"code\""
    if len(document["error"]) > MAX_DETAILS:
        return f"an error message of {len(document['error']):,} characters"
    return None


def _parser_refusal(case: HttpCase) -> bool:
    """Whether aiohttp's HTTP parser itself may refuse ``case``: a method it does not know, a request target that
    is not a path, a request line or header over its limit."""
    return (case.method not in STANDARD_METHODS or not case.path.startswith("/") or len(case.method) + len(case.path) + 10 > PARSER_LINE_LIMIT
            or any(len(name) + len(value) + 2 > PARSER_LINE_LIMIT for name, value in case.headers))


def check_http(case: HttpCase, status: int, content_type: str, body: bytes) -> str | None:
    """What is wrong with the answer ``status`` to ``case`` (None when nothing)."""
    if status >= 500:
        allowed = (status == 504 and case.deadline) or (status == 501 and ":regress" in case.path)
        if not allowed:
            return f"HTTP {status}"
    if status < 400 or case.method == "HEAD":
        return None
    if status == 400 and not body and case.method == "GET" and urllib.parse.urlsplit(case.path).path.endswith(("/ready", "/live")):
        return None  # the Open Inference Protocol's "not ready": 400 without a body, as Triton answers
    if status in (400, 431) and content_type.startswith("text/plain") and _parser_refusal(case):
        return None
    return _error_body_problem(status, content_type, body)


class HttpSender:
    """Requests on one keep-alive connection (a new one whenever the server closes it)."""

    def __init__(self, host: str, port: int, timeout: float = 30) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def send(self, case: HttpCase) -> tuple[int, str, bytes]:
        """(status, Content-Type, body); an ``OSError`` or ``http.client.HTTPException`` when no answer came."""
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            reused = self._connection.sock is not None
            try:
                self._connection.putrequest(case.method, case.path, skip_accept_encoding=True)
                for name, value in case.headers:
                    self._connection.putheader(name, value)
                if case.body or case.method in ("POST", "PUT", "PATCH"):
                    self._connection.putheader("Content-Length", str(len(case.body)))
                self._connection.endheaders(case.body or None)
                response = self._connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt or not reused:  # a kept-alive connection may have been closed while idle: once more
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, response.getheader("Content-Type", ""), data
        raise AssertionError("unreachable")


def send_raw(host: str, port: int, request: bytes, timeout: float = 30) -> tuple[int | None, str, bytes]:
    """(status or None when no answer, Content-Type, body) of ``request`` sent on a connection of its own. When no
    answer has come within half a second (a body shorter than its length said), the client hangs up its side."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # refused mid-way: the answer, if any, is still there to read
        answer = b""
        try:
            sock.settimeout(0.5)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                sock.shutdown(socket.SHUT_WR)
            sock.settimeout(timeout)
            while not _whole_answer(answer) and (chunk := sock.recv(65536)):
                answer += chunk
        except ConnectionResetError:
            pass
    answer = _final_answer(answer)
    if not answer:
        return None, "", b""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    return status, _header(lines, "content-type") or "", body


def _final_answer(answer: bytes) -> bytes:
    """``answer`` without the interim (1xx) answers before it."""
    while answer.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in answer:
        answer = answer.partition(b"\r\n\r\n")[2]
    return answer


def _header(lines: list[str], name: str) -> str | None:
    return next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith(name + ":")), None)


def _whole_answer(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole answer of a declared length (the server may keep reading a body whose
    length was a lie after answering: the client need not wait for it to close the connection)."""
    head, found, body = _final_answer(answer).partition(b"\r\n\r\n")
    length = _header(head.decode("latin-1").split("\r\n"), "content-length") if found else None
    return length is not None and length.isdigit() and len(body) >= int(length)


def fuzz_http(host: str, port: int, examples: int, seed: int | None = None, raw_share: int = 10) -> Tally:
    """Run ``examples`` hypothesis HTTP cases against the HTTP port ``host:port``: one in ``raw_share`` is a raw
    request (framing and all) on a connection of its own, the rest go over one keep-alive connection."""
    tally = Tally()
    sender = HttpSender(host, port)

    def record(describe: str, request: bytes, status: int | None, problem: str | None, body: bytes) -> None:
        tally.statuses[f"HTTP {status}" if status is not None else "HTTP no answer"] += 1
        if problem is not None:  # fault_requests: the description, and the body (or raw request) in full
            tally.faults.append(f"{describe} -> {problem}: {body[:300]!r}")
            tally.fault_requests.append((f"HTTP {describe}", request))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(case=st.integers(1, raw_share).flatmap(lambda i: raw_http() if i == 1 else http_cases()))
    def one(case: HttpCase | bytes) -> None:
        if isinstance(case, bytes):
            try:
                status, content_type, body = send_raw(host, port, case)
            except (OSError, ValueError, IndexError) as exc:
                record(f"RAW {case[:300]!r}", case, None, f"no clean answer ({exc!r})", b"")
                return
            problem = None
            if status is not None and status >= 500:
                problem = f"HTTP {status}"
            elif status is not None and status >= 400 and not (status in (400, 431) and content_type.startswith(
                    "text/plain")):
                problem = _error_body_problem(status, content_type, body)
            record(f"RAW {case[:300]!r}", case, status, problem, body)
            return
        try:
            status, content_type, body = sender.send(case)
        except (OSError, http.client.HTTPException) as exc:
            record(case.describe(), case.body, None, f"no answer ({exc!r})", b"")
            return
        record(case.describe(), case.body, status, check_http(case, status, content_type, body), body)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Do not use the `random` module inside strategies")
            one()
    finally:
        sender.close()
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
    parser.add_argument("--http-cases", type=int, default=10000, help="HTTP/REST cases, after the gRPC ones")
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
                http_statuses: Counter = Counter()
                while sum(http_statuses.values()) < args.http_cases:
                    round_tally = fuzz_http("127.0.0.1", server.http_port,
                                            min(1000, args.http_cases - sum(http_statuses.values())))
                    http_statuses.update(round_tally.statuses)
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
                    ("Traceback", "  File", "    ", "tfclassify", "ValueError", "TypeError", "Overflow",
                     "Unicode")))[-6000:])
                Path("fuzz-faults.txt").write_text("".join(f"{m} {b.hex()}\n" for m, b in tally.fault_requests))
    worst = max(bystander.latencies) * 1e3 if bystander.latencies else float("nan")
    print(f"cases: {tally.cases:,} in {seconds:.0f} s; statuses: {dict(tally.statuses.most_common())}")
    print(f"  of which HTTP: {dict(http_statuses.most_common())}")
    print(f"server faults (INTERNAL/UNKNOWN, HTTP 5xx or errors that are not JSON, messages over {MAX_DETAILS} "
          f"characters): {len(tally.faults)}")
    for fault in tally.faults[:10]:
        print("  ", fault)
    print(f"RSS: {before:.0f} MiB after warm-up, {peak:.0f} MiB peak, {after:.0f} MiB after ({after / before - 1:+.1%})")
    print(f"well-behaved client: {len(bystander.latencies):,} requests, {len(bystander.failures)} failed, "
          f"p50 {np.median(bystander.latencies) * 1e3:.1f} ms, worst {worst:.0f} ms")
    return 1 if tally.faults or bystander.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
