"""Every route of the HTTP/REST port."""

from __future__ import annotations

from aiohttp import web

from tfclassify.server.rest import classifier, classify, oip, tfserving
from tfclassify.server.rest.frontend import RestApis


def all_routes(apis: RestApis) -> list[web.RouteDef]:
    """TensorFlow Serving's REST API (``/v1/models/...``), the Open Inference Protocol (``/v2/...``),
    ``/classify``, and our Classifier service's methods (``/tfclassify.v1.Classifier/...``)."""
    return [*tfserving.routes(apis), *oip.routes(apis), *classify.routes(apis), *classifier.routes(apis)]
