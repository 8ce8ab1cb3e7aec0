"""TensorFlow Serving's REST API (placeholder until written)."""

from __future__ import annotations

from aiohttp import web

from tfclassify.server.rest.frontend import RestApis


def routes(apis: RestApis) -> list[web.RouteDef]:
    return []
