"""Our ``tfclassify.v1.Classifier`` service over HTTP/1.1, for clients that cannot or will not speak gRPC (our
own library's HTTP option among them): ``POST /tfclassify.v1.Classifier/{Method}``, the path gRPC itself uses,
with the request message as the body, in protobuf (``application/x-protobuf``) or in protobuf's JSON mapping
(``application/json``); the answer comes back in the same encoding. A failure is ``{"error": ..., "code": ...}``
with the HTTP status of the gRPC code and the code's name, so a client can raise what its gRPC twin raises.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from tfclassify.server.apis.classifier import API
from tfclassify.server.rest.bodies import check_charset, parsed
from tfclassify.server.rest.calls import invoke
from tfclassify.server.rest.frontend import Handler, RestApis, endpoint
from tfclassify.server.rest.statuses import HttpError
from tfclassify.v1 import classifier_pb2 as pb

LABEL = f"{API}_http"
SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: The unary methods (ClassifyStream needs a stream: gRPC only).
METHODS = ("Classify", "GetModelMetadata", "ListModels", "GetModelStatus", "Feedback")


def routes(apis: RestApis) -> list[web.RouteDef]:
    """One ``POST /tfclassify.v1.Classifier/{Method}`` route per unary method of the service."""
    return [web.post(f"/{SERVICE.full_name}/{name}", _handler(apis, name)) for name in METHODS]


def _handler(apis: RestApis, name: str) -> Handler:
    method = SERVICE.methods_by_name[name]
    request_class: Any = getattr(pb, method.input_type.name)
    servicer_method = getattr(apis.classifier, name)

    @endpoint(LABEL, name)
    async def handle(request: web.Request) -> web.Response:
        body = await apis.bodies.read(request)
        as_json = request.content_type == JSON
        if as_json:
            check_charset(request)
            message = await parsed(len(body), _from_json, body, request_class)
        elif request.content_type in (PROTOBUF, "application/protobuf", "application/octet-stream"):
            try:
                message = request_class.FromString(body)
            except DecodeError:
                raise HttpError(400, f"the body is not a valid {request_class.DESCRIPTOR.full_name} message "
                                     f"({len(body)} bytes)") from None
        else:
            raise HttpError(415, f"send the {request_class.DESCRIPTOR.full_name} message as {PROTOBUF} or {JSON}, "
                                 f"not {request.content_type}")
        response: Message = await invoke(servicer_method, message, request)
        if as_json:
            return web.Response(body=orjson.dumps(json_format.MessageToDict(response)), content_type=JSON)
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

    return handle


def _from_json(body: bytes, message_class: Any) -> Message:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the body is not UTF-8: JSON bodies must be") from None
    try:
        return json_format.Parse(text, message_class())
    except (json_format.ParseError, RecursionError, ValueError) as exc:
        raise HttpError(400, f"the body is not a {message_class.DESCRIPTOR.full_name} in JSON: {exc}") from None
