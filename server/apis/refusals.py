"""Handlers that only refuse: the behaviour of a method the server does not serve, or of a call it turns away
before the servicer (authentication)."""

from __future__ import annotations

from collections.abc import Callable

import grpc


def refusing(code: grpc.StatusCode, message: str, stream_response: bool) -> Callable:
    """An async handler behaviour that ends every call with ``code`` and ``message``; an async generator when the
    method streams its response, as such a method's handler must be."""
    if stream_response:
        async def refuse_stream(request, context: grpc.aio.ServicerContext):
            await context.abort(code, message)
            yield

        return refuse_stream

    async def refuse(request, context: grpc.aio.ServicerContext):
        await context.abort(code, message)

    return refuse
