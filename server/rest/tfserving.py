"""TensorFlow Serving's REST API (``/v1/models/...``), so that its clients work unmodified::

    curl http://localhost:8501/v1/models/fashion
    curl http://localhost:8501/v1/models/fashion/metadata
    curl -d '{"instances": [{"b64": "iVBORw0KGgo..."}]}' http://localhost:8501/v1/models/fashion:predict
    curl -d '{"examples": [{"image": {"b64": "..."}}]}' http://localhost:8501/v1/models/fashion/labels/stable:classify

Paths are parsed as TensorFlow Serving parses them (its regular expressions, case-insensitive), and each
request becomes the message of the gRPC method it stands for, run by the ``tensorflow_serving`` servicers
(``api="tensorflow_serving_http"``): the same checks, status codes and messages as over gRPC. The JSON
conversion is in ``tfserving_json``. As in TensorFlow Serving, the content type is not checked (curl's ``-d``
sends ``application/x-www-form-urlencoded``), and every refusal of the API is a 400 ``{"error": ...}``, a
malformed path or an unsupported HTTP method included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from tfclassify.server.apis.tfserving import API, SIGNATURE_DEF_FIELD
from tfclassify.server.core.errors import ServingError
from tfclassify.server.rest import tfserving_json as tj
from tfclassify.server.rest.bodies import check_charset, json_object, parsed
from tfclassify.server.rest.calls import invoke
from tfclassify.server.rest.frontend import Handler, RestApis, endpoint
from tfclassify.server.rest.statuses import HttpError
from tfclassify.server.runtime.model_runtime import DEFAULT_SIGNATURE

LABEL = f"{API}_http"
#: TensorFlow Serving's paths (model_servers/http_rest_api_handler.cc).
# re.ASCII: \d is 0-9 only, as in RE2 (Python's also takes other scripts' digits).
PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
                             re.IGNORECASE | re.ASCII)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
                         re.IGNORECASE | re.ASCII)
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ModelPath:
    """What a path names: the model, its version or version label, and the method (``predict``, ``metadata``...)."""

    model: str
    version: int | None
    label: str | None
    method: str

    def spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        """The ``ModelSpec`` of the path."""
        spec = model_pb2.ModelSpec(name=self.model, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        return spec


def parse_path(http_method: str, path: str) -> ModelPath:
    """The model path of a request; ``HttpError`` 400 with TensorFlow Serving's messages when malformed."""
    pattern = PREDICTION_PATH if http_method == "POST" else STATUS_PATH if http_method in ("GET", "HEAD") else None
    match = pattern.fullmatch(path) if pattern is not None else None
    if match is None:
        raise HttpError(400, f"Malformed request: {http_method} {path}")
    model, version, label, method = match.groups()
    if http_method != "POST" and not model:
        raise HttpError(400, "Missing model name in request.")
    # The length first: int() refuses strings of over 4,300 digits (a ValueError of its own).
    if version is not None and (len(version) > 19 or int(version) > _INT64_MAX):
        raise HttpError(400, f"Failed to convert version: {version} to numeric.")
    return ModelPath(model, int(version) if version is not None else None, label, (method or "status").lower())


def json_response(value: Any) -> web.Response:
    """A JSON answer (numpy arrays written in place, float32 as its shortest decimals)."""
    return web.Response(body=orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), content_type="application/json")


def routes(apis: RestApis) -> list[web.RouteDef]:
    """``GET /v1/models/{m}[/versions/{v}|/labels/{l}][/metadata]`` and ``POST ...:predict``, ``:classify``,
    ``:regress``; anything else under ``/v1/`` is TensorFlow Serving's 400 "Malformed request"."""
    handlers = _Handlers(apis)

    def marked(method: str, run: Handler) -> Handler:
        # One handler per method, so that refusals before a servicer runs count under the right method.
        @endpoint(LABEL, method)
        async def handle(request: web.Request) -> web.StreamResponse:
            return await run(request)

        return handle

    get, post = marked("GetModelStatus", handlers.get), marked("Predict", handlers.post)
    return [
        web.get("/v1/models/{path:.*}/metadata", marked("GetModelMetadata", handlers.get)),
        web.post("/v1/models/{path:.*}:predict", post),
        web.post("/v1/models/{path:.*}:classify", marked("Classify", handlers.post)),
        web.post("/v1/models/{path:.*}:regress", marked("Regress", handlers.post)),
        # The catch-alls: every other path under /v1/ and every other method, as TensorFlow Serving's.
        web.get("/v1/{path:.*}", get),
        web.post("/v1/{path:.*}", post),
        web.route("*", "/v1/{path:.*}", handlers.malformed),
    ]


class _Handlers:
    """The routes' work, on ``apis``."""

    def __init__(self, apis: RestApis) -> None:
        self.apis = apis

    async def malformed(self, request: web.Request) -> web.Response:
        raise HttpError(400, f"Malformed request: {request.method} {request.path}")

    async def get(self, request: web.Request) -> web.Response:
        path = parse_path(request.method, request.path)
        if path.method == "metadata":
            message = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=path.spec(),
                                                                     metadata_field=[SIGNATURE_DEF_FIELD])
            return json_response(tj.metadata_json(await invoke(self.apis.prediction.GetModelMetadata, message,
                                                               request)))
        message = get_model_status_pb2.GetModelStatusRequest(model_spec=path.spec())
        return json_response(tj.status_json(await invoke(self.apis.model.GetModelStatus, message, request)))

    async def post(self, request: web.Request) -> web.Response:
        path = parse_path("POST", request.path)
        check_charset(request)
        raw = await self.apis.bodies.read(request)
        body = await parsed(len(raw), json_object, raw)
        try:
            signature = tj.signature_name(body)
            if path.method == "predict":
                return await self._predict(request, path, signature, body, len(raw))
            examples = await parsed(len(raw), tj.examples_input, body)
        except tj.JsonRequestError as exc:
            raise HttpError(400, str(exc)) from None
        except RecursionError:  # nesting orjson parsed, deeper than the conversion's recursion goes
            raise HttpError(400, "the JSON body nests too deeply to be a tensor or a tf.Example") from None
        if path.method == "regress":
            raise HttpError(501, f"Regress is not supported: model {path.model} is a classifier, its signature "
                                 "is not tensorflow/serving/regress; use :classify or :predict")
        message = classification_pb2.ClassificationRequest(model_spec=path.spec(signature), input=examples)
        response = await invoke(self.apis.prediction.Classify, message, request)
        return json_response(tj.classify_json(response.result))

    async def _predict(self, request: web.Request, path: ModelPath, signature: str,
                       body: dict[str, Any], size: int) -> web.Response:
        message = predict_pb2.PredictRequest(model_spec=path.spec(signature))
        inputs = self._signature_inputs(path, signature)
        if inputs is not None:  # else the RPC answers why: no such model, version, label or signature
            request_format, tensors = await parsed(size, tj.predict_inputs, body, inputs)
            for name, tensor in tensors.items():
                message.inputs[name].CopyFrom(tensor)
        else:
            request_format = tj.ROW
        response = await invoke(self.apis.prediction.Predict, message, request)
        return json_response(tj.predict_json(response.outputs, request_format))

    def _signature_inputs(self, path: ModelPath, signature: str) -> dict[str, int] | None:
        """The served signature's inputs {name: DataType} (TensorFlow Serving reads them to convert the JSON), or
        None when the path or signature names nothing served."""
        try:
            runtime = self.apis.dataplane.resolve(path.model, path.version, path.label).runtime
        except ServingError:
            return None
        if (signature or DEFAULT_SIGNATURE) != runtime.signature_name:
            return None
        definition = meta_graph_pb2.SignatureDef.FromString(runtime.signature_def)
        return {name: info.dtype for name, info in definition.inputs.items()}
