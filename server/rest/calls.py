"""Calling a gRPC servicer method from an HTTP route, with the HTTP request standing in for the gRPC context."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from aiohttp import web

from tfclassify.server.apis.meter import RpcFailure

R = TypeVar("R")
T = TypeVar("T")

#: Keys of what the front end keeps on each ``web.Request``.
DEADLINE = "tfclassify.deadline"  # the request's deadline, a time.monotonic() instant, or None
METERED = "tfclassify.metered"  # set once a servicer's meter counts the request


class HttpContext:
    """What the servicers ask of a ``grpc.aio.ServicerContext``, answered from an HTTP request: the deadline,
    the ``authorization`` header (as metadata), the client's address; ``abort`` raises ``RpcFailure``."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    def time_remaining(self) -> float | None:
        deadline = self._request.get(DEADLINE)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        authorization = self._request.headers.get("Authorization")
        return (("authorization", authorization),) if authorization is not None else ()

    def peer(self) -> str:
        """The client as gRPC names it (``ipv4:10.1.2.3:51234``, ``ipv6:[::1]:51234``): admission's per-client key."""
        peername = self._request.transport.get_extra_info("peername") if self._request.transport else None
        if not peername:
            return "unknown:"
        host, port = peername[0], peername[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise RpcFailure(code, details)


async def invoke(method: Callable[[R, Any], Awaitable[T]], message: R, request: web.Request) -> T:
    """Run a servicer's gRPC method on ``message`` as gRPC would, counted by its meter; ``RpcFailure`` when it
    ends with a status other than OK. As gRPC does, the method is cancelled when the request's deadline passes
    (queued, decoding or running): its meter counts it as DEADLINE_EXCEEDED, and the client gets 504 then."""
    request[METERED] = True
    context = HttpContext(request)
    remaining = context.time_remaining()
    if remaining is None or remaining <= 0:  # no deadline, or one already past: the data plane refuses it
        return await method(message, context)
    try:
        return await asyncio.wait_for(method(message, context), remaining)
    except asyncio.TimeoutError:
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED,
                         "the request's deadline (Request-Timeout) passed before its answer was ready") from None
