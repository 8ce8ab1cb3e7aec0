"""The HTTP/REST port's server: aiohttp on the event loop that runs gRPC, with what every route shares.

Before a route runs, the front end checks the bearer token (but for the routes marked open: the Open Inference
Protocol's health, as gRPC's health service is open) and
reads the deadline header; after it, it turns every failure into the JSON error of the APIs (``{"error": ..., "code": ...}``)
with the HTTP status of the gRPC code (``statuses.HTTP_STATUS``) and the code's name, counts refusals no servicer saw in the metrics
and the access log, and gives back the byte budget a large body held. aiohttp parses HTTP (llhttp, with limits on
the request line, header count and size) and cancels the route when the client hangs up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tfclassify.server.apis.access_log import AccessLog
from tfclassify.server.apis.meter import Metering, RpcFailure, clip
from tfclassify.server.auth import TokenTable, bearer_token
from tfclassify.server.rest.bodies import BodyReader
from tfclassify.server.rest.calls import DEADLINE, METERED
from tfclassify.server.rest.statuses import HTTP_STATUS, HttpError, error_response, grpc_code, text_header
from tfclassify.server.tls import ReloadingSslContext, reloading_server_context

if TYPE_CHECKING:
    from tfclassify.server.apis.classifier import ClassifierServicer
    from tfclassify.server.apis.oip import InferenceServicer
    from tfclassify.server.apis.tfserving import ModelServicer, PredictionServicer
    from tfclassify.server.core.dataplane import DataPlane
    from tfclassify.server.core.manager import ModelManager

log = logging.getLogger(__name__)

#: The deadline header: seconds the client will wait (decimal), as gRPC's own timeout is for gRPC calls.
TIMEOUT_HEADER = "Request-Timeout"
#: Longest request line or header line, and most headers, the HTTP parser takes (past them: 400).
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProtocolErrorFilter(logging.Filter):
    """aiohttp logs each request its parser refuses (a bad request line, too long a header) at ERROR with a
    traceback, after answering it 400. That is the client's doing, not the server's: counted, and one DEBUG line.
    Other records (an error of aiohttp's own while answering) pass as they are."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        reason = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not isinstance(reason, HttpProcessingError):
            return True
        self._count()
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        record.msg, record.args = f"{record.getMessage()}: {reason}", None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@dataclass(frozen=True)
class RestApis:
    """What the routes call: the gRPC servicers (built for the ``http`` transport, so that their metrics and
    access-log lines say so), the data plane and manager they run on, and the body reader."""

    classifier: ClassifierServicer
    prediction: PredictionServicer
    model: ModelServicer
    inference: InferenceServicer
    dataplane: DataPlane
    manager: ModelManager
    metering: Metering
    is_ready: Callable[[], bool]
    bodies: BodyReader


def endpoint(api: str, method: str, open_to_all: bool = False) -> Callable[[Handler], Handler]:
    """Mark a route handler with the ``api`` label and method its requests count under when the front end
    refuses them before a servicer runs (a malformed body, a slow sender); ``open_to_all``: it needs no token
    (health, as gRPC's health service: probes carry none)."""

    def mark(handler: Handler) -> Handler:
        handler.tfclassify_endpoint = (api, method)  # type: ignore[attr-defined]
        handler.tfclassify_open = open_to_all  # type: ignore[attr-defined]
        return handler

    return mark


def parse_timeout(value: str) -> float:
    """Seconds from the ``Request-Timeout`` header; ``HttpError`` 400 unless a positive finite number."""
    try:
        seconds = float(value) if len(value) <= 32 and value.strip().replace(".", "", 1).isdigit() else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise HttpError(400, f"the {TIMEOUT_HEADER} header must be the seconds to wait, a positive decimal number "
                             f"such as 2.5; got {clip(value, 40)!r}")
    return seconds


class RestFrontend:
    """The HTTP/REST server: ``await start(...)``, then ``await stop(grace)``."""

    def __init__(self, routes: Iterable[web.RouteDef], metering: Metering, bodies: BodyReader,
                 tokens: TokenTable | None, access_log: AccessLog | None, max_body_bytes: int) -> None:
        self._metering, self._bodies = metering, bodies
        self._tokens, self._access_log = tokens, access_log
        self.app = web.Application(middlewares=[self._middleware], client_max_size=max_body_bytes)
        self.app.add_routes(list(routes))
        self._runner: web.AppRunner | None = None
        self.port = -1

    async def start(self, host: str, port: int, tls: ReloadingSslContext | None = None,
                    reuse_port: bool = False, grace_s: float = 10.0) -> int:
        """Listen on ``host:port`` (``reuse_port``: shared with the other workers of ``serve --workers``, as
        their gRPC port is); returns the port. ``OSError`` when it cannot be bound. At ``stop``, requests in
        progress have ``grace_s`` to finish."""
        # handler_cancellation: a route whose client hung up is cancelled, as gRPC cancels the call.
        # keepalive_timeout: aiohttp closes a connection that has not sent a whole request (headers) in this long,
        # from its start or its last answer: slow senders of headers and idle keep-alive connections alike.
        protocol_log = logging.getLogger(f"{__name__}.protocol")
        if not protocol_log.filters:
            protocol_log.addFilter(ProtocolErrorFilter(self._metering.metrics.http_malformed_requests.inc))
        # The parser's limits, stated rather than left to aiohttp's defaults (which have changed between versions).
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, handler_cancellation=True,
                                     shutdown_timeout=grace_s, keepalive_timeout=self._bodies.timeout_s,
                                     logger=protocol_log, max_line_size=MAX_LINE_BYTES,
                                     max_field_size=MAX_LINE_BYTES, max_headers=MAX_HEADERS)
        await self._runner.setup()
        context = reloading_server_context(tls) if tls is not None else None
        site = web.TCPSite(self._runner, host, port, ssl_context=context, backlog=1024, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = site._server  # the asyncio server: which port port 0 got
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop accepting connections; let requests in progress finish within the grace period."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter_ns()
        route_handler = request.match_info.handler
        try:
            if request.match_info.http_exception is None:  # a route matched: the API's rules apply
                if not getattr(route_handler, "tfclassify_open", False):
                    self._authenticate(request)
                value = request.headers.get(TIMEOUT_HEADER)
                request[DEADLINE] = None if value is None else time.monotonic() + parse_timeout(value)
            return await handler(request)
        except RpcFailure as failure:  # counted by the servicer's meter
            headers = {"WWW-Authenticate": "Bearer"} if failure.code is grpc.StatusCode.UNAUTHENTICATED else None
            return error_response(HTTP_STATUS.get(failure.code, 500), failure.details, headers, failure.code)
        except HttpError as error:
            self._count_refusal(request, route_handler, error.status, started)
            return error_response(error.status, clip(error.message), error.headers)
        except web.HTTPException as exc:  # no such path or method, or aiohttp's own refusals
            if exc.status >= 400:
                self._count_refusal(request, route_handler, exc.status, started)
                return error_response(exc.status, _http_exception_message(request, exc),
                                      {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None)
            raise
        except asyncio.CancelledError:  # the client hung up (a servicer's meter counts its own)
            self._count_refusal(request, route_handler, 499, started)
            raise
        except ConnectionError:  # the client hung up while its body was read
            self._count_refusal(request, route_handler, 499, started)
            return error_response(499, "the client closed the connection before its request arrived")
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            self._count_refusal(request, route_handler, 500, started)
            return error_response(500, "internal error; the server log has the details")
        finally:
            self._bodies.release(request)

    def _authenticate(self, request: web.Request) -> None:
        if self._tokens is None:
            return
        authorization = text_header(request.headers, "Authorization")
        metadata = (("authorization", authorization),) if authorization is not None else ()
        if self._tokens.models_for(bearer_token(metadata)) is None:
            raise HttpError(401, "a valid token is required: send the header 'Authorization: Bearer <token>'",
                            {"WWW-Authenticate": "Bearer"})

    def _count_refusal(self, request: web.Request, route_handler: object, status: int, started: int) -> None:
        """Count a request that no servicer's meter saw, under its endpoint's labels (unknown paths are not)."""
        if request.get(METERED):
            return
        mark = getattr(route_handler, "tfclassify_endpoint", None)
        if mark is None:
            return
        api, method = mark
        code = grpc_code(status).name
        seconds = (time.perf_counter_ns() - started) / 1e9
        if status != 401:  # as over gRPC, refused tokens are in the access log, not the request metrics
            self._metering.metrics.observe_request(api, method, "", "", code, seconds)
        if self._access_log is not None:
            self._access_log.record(api, method, "", False, "", 0, seconds, code)


def _http_exception_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such path: {clip(request.path, 200)} (the APIs are under /v1/models, /v2 and /classify)"
    if exc.status == 405:
        return f"{request.method} is not allowed on {clip(request.path, 200)}; allowed: {exc.headers.get('Allow', '')}"
    return exc.text or exc.reason
