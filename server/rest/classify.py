"""``/classify``: our own API for people and scripts. One image file as the body, or several as a multipart
form, and the best classes of each come back as JSON::

    curl --data-binary @cat.jpg http://localhost:8501/classify/pets
    curl -F image=@cat.jpg -F image=@dog.png 'http://localhost:8501/classify/pets/labels/stable?top_k=3'

It runs our ``Classify`` RPC on the files (decoded by the server as the model declares), so it has that RPC's
limits, errors and metrics (``api="tfclassify_http"``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tfclassify.server.apis.classifier import API
from tfclassify.server.core.errors import ServingError
from tfclassify.server.rest.calls import invoke
from tfclassify.server.rest.frontend import RestApis, endpoint
from tfclassify.server.rest.statuses import HttpError, text_header
from tfclassify.v1 import classifier_pb2 as pb

LABEL = f"{API}_http"
#: Classes answered per image unless ``top_k`` says (fewer when the model has fewer).
DEFAULT_TOP_K = 5
_VERSION_DIGITS = 18


def routes(apis: RestApis) -> list[web.RouteDef]:
    """``POST /classify/{model}``, ``.../versions/{version}`` and ``.../labels/{label}``."""

    @endpoint(LABEL, "Classify")
    async def classify(request: web.Request) -> web.Response:
        info = request.match_info
        spec = pb.ModelSpec(name=info["model"])
        version = info.get("version")
        if version is not None:
            if not (version.isascii() and version.isdigit() and len(version) <= _VERSION_DIGITS):
                raise HttpError(400, f"the version in the path must be a version number, not {version!r}")
            spec.version = int(version)
        if "label" in info:
            spec.version_label = info["label"]
        if request.content_type == "multipart/form-data":
            files = await apis.bodies.read_files(request)
        else:
            files = [(None, await apis.bodies.read(request))]
        if not files or not all(data for _, data in files):
            raise HttpError(400, "no image: send a PNG or JPEG file as the body (curl --data-binary @cat.jpg), or "
                                 "files as a multipart form (curl -F image=@cat.jpg -F image=@dog.png)")
        top_k = _top_k(request, apis, spec)
        message = pb.ClassifyRequest(model_spec=spec, top_k=top_k,
                                     request_id=(text_header(request.headers, "X-Request-Id") or "")[:200])
        message.encoded.images.extend(data for _, data in files)
        response: pb.ClassifyResponse = await invoke(apis.classifier.Classify, message, request)
        return web.Response(body=orjson.dumps(classify_json(response, [name for name, _ in files])),
                            content_type="application/json")

    return [
        web.post("/classify/{model}", classify),
        web.post("/classify/{model}/versions/{version}", classify),
        web.post("/classify/{model}/labels/{label}", classify),
    ]


def _top_k(request: web.Request, apis: RestApis, spec: pb.ModelSpec) -> int:
    value = request.query.get("top_k")
    if value is not None:
        if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 6 and int(value) >= 1):
            raise HttpError(400, f"top_k must be a whole number of classes, 1 or more; got {value[:40]!r}")
        return int(value)
    try:  # the default: 5, or every class of a model with fewer
        served = apis.dataplane.resolve(spec.name, spec.version if spec.HasField("version") else None,
                                        spec.version_label if spec.HasField("version_label") else None)
    except ServingError:
        return 1  # the RPC answers the error (unknown model, version or label)
    return min(DEFAULT_TOP_K, served.runtime.num_classes)


def classify_json(response: pb.ClassifyResponse, names: list[str | None]) -> dict[str, Any]:
    """The JSON answer: the model version, then per file its name (multipart), best class and ``top_k`` classes."""
    k = response.top_k
    predictions = []
    for i, name in enumerate(names):
        rows = range(i * k, (i + 1) * k)
        entry: dict[str, Any] = {"class": response.classes[i], "label": response.labels[i],
                                 "score": response.scores[i]}
        if name is not None:
            entry = {"file": name, **entry}
        entry["top_k"] = [{"class": response.top_k_classes[j], "label": response.top_k_labels[j],
                           "score": response.top_k_scores[j]} for j in rows]
        predictions.append(entry)
    return {"model": response.model_spec.name, "version": response.model_spec.version, "predictions": predictions}
