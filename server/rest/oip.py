"""The Open Inference Protocol's HTTP/REST binding (KServe v2, as Triton serves it), so that ``tritonclient.http``
and ``perf_analyzer -i http`` work unmodified::

    GET  /v2                                         server metadata
    GET  /v2/health/live, /v2/health/ready           200, or 400 with no body (as Triton)
    GET  /v2/models/{m}[/versions/{v}]               model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready         200, or 400 with no body
    GET  /v2/models/{m}[/versions/{v}]/config        Triton's model configuration
    GET  /v2/models[/{m}[/versions/{v}]]/stats       Triton's statistics
    POST /v2/models/{m}[/versions/{v}]/infer         inference: JSON, or JSON then binary tensor data

Each route calls the gRPC ``InferenceServicer`` built for the ``http`` transport (``api="open_inference_http"``),
so both transports share queues, statistics, metrics and errors. The body conversion is in ``oip_json``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tfclassify.inference import grpc_service_pb2 as pb
from tfclassify.server.rest import oip_json
from tfclassify.server.rest.bodies import parsed
from tfclassify.server.rest.calls import DEADLINE, invoke
from tfclassify.server.rest.frontend import RestApis, endpoint
from tfclassify.server.rest.statuses import HttpError

LABEL = "open_inference_http"
_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"
_COMPRESSIONS = ("gzip", "deflate")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(apis: RestApis) -> list[web.RouteDef]:
    """The binding's routes, each model route with and without ``/versions/{version}``."""
    inference = apis.inference

    @endpoint(LABEL, "ServerLive", open_to_all=True)
    async def server_live(request: web.Request) -> web.Response:
        return _health((await invoke(inference.ServerLive, pb.ServerLiveRequest(), request)).live)

    @endpoint(LABEL, "ServerReady", open_to_all=True)
    async def server_ready(request: web.Request) -> web.Response:
        return _health((await invoke(inference.ServerReady, pb.ServerReadyRequest(), request)).ready)

    @endpoint(LABEL, "ServerMetadata")
    async def server_metadata(request: web.Request) -> web.Response:
        return _json(oip_json.message_json(await invoke(inference.ServerMetadata, pb.ServerMetadataRequest(),
                                                        request)))

    @endpoint(LABEL, "ModelReady")
    async def model_ready(request: web.Request) -> web.Response:
        message = pb.ModelReadyRequest(name=_model(request), version=_version(request))
        return _health((await invoke(inference.ModelReady, message, request)).ready)

    @endpoint(LABEL, "ModelMetadata")
    async def model_metadata(request: web.Request) -> web.Response:
        message = pb.ModelMetadataRequest(name=_model(request), version=_version(request))
        return _json(oip_json.message_json(await invoke(inference.ModelMetadata, message, request)))

    @endpoint(LABEL, "ModelConfig")
    async def model_config(request: web.Request) -> web.Response:
        message = pb.ModelConfigRequest(name=_model(request), version=_version(request))
        response: pb.ModelConfigResponse = await invoke(inference.ModelConfig, message, request)
        return _json(oip_json.message_json(response.config))  # Triton answers the configuration itself

    @endpoint(LABEL, "ModelStatistics")
    async def model_statistics(request: web.Request) -> web.Response:
        message = pb.ModelStatisticsRequest(name=request.match_info.get("model", ""), version=_version(request))
        # fill: every duration, zeros included, as Triton writes them (perf_analyzer reads them all).
        return _json(oip_json.message_json(await invoke(inference.ModelStatistics, message, request), fill=True))

    @endpoint(LABEL, "ModelInfer")
    async def model_infer(request: web.Request) -> web.Response:
        body = await apis.bodies.read(request)
        header = request.headers.get(oip_json.HEADER_LENGTH)
        # What is JSON: the whole body, or the header before the binary tensors (a short one: parsed in place).
        json_bytes = int(header) if header is not None and header.isascii() and header.isdigit() and len(
            header) < 12 else len(body)
        try:
            call = await parsed(min(json_bytes, len(body)), oip_json.parse_infer_request, body, header,
                                _model(request), _version(request))
        except oip_json.RequestError as error:
            raise HttpError(400, str(error)) from None
        if call.timeout_s is not None:
            _shorten_deadline(request, call.timeout_s)
        response = await invoke(inference.ModelInfer, call.message, request)
        answer, header_length = oip_json.infer_response_body(response, call)
        if header_length is None:
            reply = web.Response(body=answer, content_type="application/json")
        else:
            reply = web.Response(body=answer, content_type="application/octet-stream",
                                 headers={oip_json.HEADER_LENGTH: str(header_length)})
        _compress_if_asked(request, reply)
        return reply

    model_routes: list[tuple[str, Handler]] = [
        ("/ready", model_ready), ("/config", model_config), ("/stats", model_statistics), ("", model_metadata),
    ]
    return [
        web.get("/v2", server_metadata),
        web.get("/v2/health/live", server_live),
        web.get("/v2/health/ready", server_ready),
        web.get("/v2/models/stats", model_statistics),  # before /v2/models/{model}: Triton's path, not a model
        *(web.get(prefix + suffix, handler) for prefix in (_MODEL, _VERSION) for suffix, handler in model_routes),
        web.post(_MODEL + "/infer", model_infer),
        web.post(_VERSION + "/infer", model_infer),
    ]


def _model(request: web.Request) -> str:
    return request.match_info["model"]


def _version(request: web.Request) -> str:
    """The version in the path, "" for the served one (the servicer checks that it is a number)."""
    return request.match_info.get("version", "")


def _health(ok: bool) -> web.Response:
    """Triton's health answers: 200, or 400, with no body."""
    return web.Response(status=200 if ok else 400)


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(body=oip_json.json_body(document), content_type="application/json")


def _shorten_deadline(request: web.Request, timeout_s: float) -> None:
    """Triton's ``timeout`` parameter: the deadline is the earlier of it and the ``Request-Timeout`` header's."""
    deadline = time.monotonic() + timeout_s
    current = request.get(DEADLINE)
    request[DEADLINE] = deadline if current is None else min(current, deadline)


def _compress_if_asked(request: web.Request, reply: web.Response) -> None:
    """Compress the answer when the client asks (tritonclient's ``response_compression_algorithm``); aiohttp
    picks gzip or deflate from ``Accept-Encoding``. Request bodies are decompressed by aiohttp already."""
    accepted = request.headers.get("Accept-Encoding", "").lower()
    if any(name in accepted for name in _COMPRESSIONS):
        reply.enable_compression()
