"""Reading HTTP request bodies within the server's limits: size, arrival time, the byte budget of large requests,
and JSON that parses (orjson: UTF-8 only, nesting past 1,024 levels refused)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tfclassify.server.apis.admission import ByteBudget
from tfclassify.server.rest.json_types import json_type
from tfclassify.server.rest.statuses import HttpError

#: Key of the bytes a request holds in the byte budget (released by the front end once it is answered).
BUDGET_BYTES = "tfclassify.budget_bytes"


class BodyReader:
    """Reads each request's body: refused with 413 past ``limit`` bytes (before reading, when the length is
    declared), 408 when it takes longer than ``timeout_s`` to arrive, 429 when a large body would pass the byte
    budget of large requests in progress (as gRPC messages are)."""

    def __init__(self, limit: int, timeout_s: float, budget: ByteBudget | None = None) -> None:
        self.limit, self.timeout_s, self.budget = limit, timeout_s, budget

    async def read(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.limit:
            raise HttpError(413, f"the request body is {length:,} bytes; this server takes at most {self.limit:,} "
                                 "(--max-message-bytes): send fewer images per request")
        if length is not None and self.budget is not None and length >= self.budget.large_bytes:
            self._admit(request, length)
        try:
            body = await asyncio.wait_for(request.read(), self.timeout_s)
        except asyncio.TimeoutError:
            raise HttpError(408, f"the request body did not arrive within {self.timeout_s:g} s "
                                 "(--http-read-timeout-s)") from None
        except web.HTTPRequestEntityTooLarge:
            raise HttpError(413, f"the request body is over {self.limit:,} bytes, the most this server takes "
                                 "(--max-message-bytes): send fewer images per request") from None
        if length is None and self.budget is not None and len(body) >= self.budget.large_bytes:
            self._admit(request, len(body))  # a chunked body: counted once it is here
        return body

    async def read_files(self, request: web.Request) -> list[tuple[str | None, bytes]]:
        """The files of a ``multipart/form-data`` body, ``(file name, bytes)`` in order, within the same limits
        (aiohttp counts the parts' bytes against the size limit as they arrive, and at most 1,000 parts)."""
        length = request.content_length
        if length is not None and length > self.limit:
            raise HttpError(413, f"the request body is {length:,} bytes; this server takes at most {self.limit:,} "
                                 "(--max-message-bytes): send fewer images per request")
        if length is not None and self.budget is not None and length >= self.budget.large_bytes:
            self._admit(request, length)
        try:
            form = await asyncio.wait_for(request.post(), self.timeout_s)
        except asyncio.TimeoutError:
            raise HttpError(408, f"the request body did not arrive within {self.timeout_s:g} s "
                                 "(--http-read-timeout-s)") from None
        except web.HTTPRequestEntityTooLarge:
            raise HttpError(413, f"the request body is over {self.limit:,} bytes, the most this server takes "
                                 "(--max-message-bytes): send fewer images per request") from None
        except (ValueError, AssertionError, web.HTTPBadRequest, HttpProcessingError) as exc:  # malformed multipart
            raise HttpError(400, f"the multipart/form-data body cannot be read: {exc}") from None
        files: list[tuple[str | None, bytes]] = []
        for value in form.values():
            if isinstance(value, web.FileField):
                files.append((value.filename, value.file.read()))
                value.file.close()
        return files

    def _admit(self, request: web.Request, size: int) -> None:
        assert self.budget is not None
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

