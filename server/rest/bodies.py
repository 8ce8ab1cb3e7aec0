"""Reading HTTP request bodies within the server's limits: size, arrival time, the byte budget of large requests,
and JSON that parses (orjson: UTF-8 only, nesting past 1,024 levels refused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tfclassify.server.apis.admission import ByteBudget
from tfclassify.server.rest.calls import DEADLINE
from tfclassify.server.rest.json_types import json_type
from tfclassify.server.rest.statuses import HttpError

#: Key of the bytes a request holds in the byte budget (released by the front end once it is answered).
BUDGET_BYTES = "tfclassify.budget_bytes"
T = TypeVar("T")


def close(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if isinstance(awaitable, Coroutine):
        awaitable.close()


class BodyReader:
    """Reads each request's body: refused with 413 past ``limit`` bytes (before reading, when the length is
    declared; else as soon as the bytes, inflated if compressed, pass it), 408 when it takes longer than
    ``timeout_s`` (or the request's own deadline) to arrive, and 429 when a large body would pass the byte
    budget of large requests in progress. As for gRPC messages, a body counts against the budget once it is
    here, at its size as read: a client that declares a large body and sends nothing holds nothing."""

    def __init__(self, limit: int, timeout_s: float, budget: ByteBudget | None = None) -> None:
        self.limit, self.timeout_s, self.budget = limit, timeout_s, budget

    async def read(self, request: web.Request) -> bytes:
        """The whole body."""
        body = await self._arrival(request, request.read())
        self._admit(request, len(body))
        return body

    async def read_files(self, request: web.Request) -> list[tuple[str | None, bytes]]:
        """The files of a ``multipart/form-data`` body, ``(file name, bytes)`` in order, within the same limits
        (aiohttp counts the parts' bytes against the size limit as they arrive, and at most 1,000 parts)."""
        try:
            form = await self._arrival(request, request.post())
        except (ValueError, AssertionError, web.HTTPBadRequest, HttpProcessingError) as exc:  # malformed multipart
            raise HttpError(400, f"the multipart/form-data body cannot be read: {exc}") from None
        files: list[tuple[str | None, bytes]] = []
        for value in form.values():
            if isinstance(value, web.FileField):
                files.append((value.filename, value.file.read()))
                value.file.close()
        self._admit(request, sum(len(data) for _, data in files))
        return files

    async def _arrival(self, request: web.Request, reading: Awaitable[T]) -> T:
        """Await ``reading`` of the body within the size limit and the read timeout (or the request's deadline,
        when that comes first)."""
        length = request.content_length
        if length is not None and length > self.limit:
            close(reading)
            raise HttpError(413, f"the request body is {length:,} bytes; this server takes at most {self.limit:,} "
                                 "(--max-message-bytes): send fewer images per request")
        deadline = request.get(DEADLINE)
        timeout = self.timeout_s if deadline is None else min(self.timeout_s, max(0.0, deadline - time.monotonic()))
        try:
            return await asyncio.wait_for(reading, timeout)
        except asyncio.TimeoutError:
            if timeout < self.timeout_s:
                raise HttpError(504, "the request's deadline (Request-Timeout) passed before its body arrived") from None
            raise HttpError(408, f"the request body did not arrive within {self.timeout_s:g} s "
                                 "(--http-read-timeout-s)") from None
        except web.HTTPRequestEntityTooLarge:
            raise HttpError(413, f"the request body is over {self.limit:,} bytes, the most this server takes "
                                 "(--max-message-bytes): send fewer images per request") from None

    def _admit(self, request: web.Request, size: int) -> None:
        """Count a large body (``budget.large_bytes`` or more) in the byte budget; 429 when it would pass it."""
        if self.budget is None or size < self.budget.large_bytes:
            return
        refusal = self.budget.admit(size)
        if refusal is not None:
            raise HttpError(429, refusal)
        request[BUDGET_BYTES] = size

    def release(self, request: web.Request) -> None:
        """Give back what ``request`` holds of the byte budget."""
        size = request.get(BUDGET_BYTES)
        if size and self.budget is not None:
            self.budget.release(size)
            request[BUDGET_BYTES] = 0


#: JSON bodies from this size up are parsed and converted off the event loop: 1 MiB of JSON takes 20 ms (orjson
#: and numpy) to 270 ms (protobuf's JSON mapping) of one core, which gRPC and the other requests would wait for.
OFF_LOOP_BYTES = 256 * 1024


async def parsed(size: int, parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)`` for a body of ``size`` bytes: on the event loop when small, else in a worker thread (the
    loop gets its turns at every switch interval of the GIL, instead of waiting for the whole parse)."""
    if size < OFF_LOOP_BYTES:
        return parse(*args)
    return await asyncio.to_thread(parse, *args)


def check_charset(request: web.Request) -> None:
    """415 for a body declared in a charset other than UTF-8 (JSON is UTF-8, RFC 8259)."""
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise HttpError(415, f"the body is declared as {charset}; JSON bodies must be UTF-8")


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; 400 with the parser's reason when it is not JSON."""
    if not body:
        raise HttpError(400, "the request has no body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not valid JSON: {exc}") from None


def json_object(body: bytes) -> dict[str, Any]:
    """The JSON object of ``body``; 400 when it is not one."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise HttpError(400, f"the body must be a JSON object, not {json_type(value)}")
    return value

