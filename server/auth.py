"""Bearer-token authentication, with the models each token may use.

``--auth-tokens FILE`` holds one token per line, then the models it may use (comma-separated, or ``*`` for
all); ``#`` starts a comment. Example::

    # scoring job: every model
    3f9c0e7b5d2a48c1a6e4 *
    # the shop front: one model
    b71d2e55c0a94f3e8d12 fashion_mnist

Every service but health needs ``authorization: Bearer <token>`` (UNAUTHENTICATED otherwise); a request for a
model the token may not use gets PERMISSION_DENIED. Tokens are compared in constant time, the file is read
again when it changes (a rotated Kubernetes Secret), and no token is ever logged.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import grpc

from tfclassify.server.apis.access_log import AccessLog, api_and_method
from tfclassify.server.apis.refusals import refusing

log = logging.getLogger(__name__)

#: The models of a token that may use every model.
ALL_MODELS = frozenset({"*"})
#: Services any caller may use: probes and load balancers carry no token.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class TokenFileError(ValueError):
    """The token file cannot be read or a line is malformed."""


def parse_tokens(text: str, source: str = "tokens") -> list[tuple[bytes, frozenset[str]]]:
    """(token, models) for each line of a token file."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenFileError(f"{source}, line {number}: expected 'TOKEN MODELS' (MODELS: a,b or *)")
        token, models = parts
        if len(token) < 16:
            raise TokenFileError(f"{source}, line {number}: a token must have 16 characters or more")
        tokens.append((token.encode(), ALL_MODELS if models == "*" else frozenset(models.split(","))))
    if not tokens:
        raise TokenFileError(f"{source}: no token")
    return tokens


class TokenTable:
    """The tokens of a file, read again (at most once a second) when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens = parse_tokens(self._read(), str(path))
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def models_for(self, presented: str | None) -> frozenset[str] | None:
        """The models the presented token may use (``ALL_MODELS`` for all), or None for no valid token.
        Every token is compared, each in constant time: the time taken says nothing about the tokens."""
        self._reload_if_changed()
        if not presented:
            return None
        candidate = presented.encode()
        found = None
        for token, models in self._tokens:
            if hmac.compare_digest(token, candidate):
                found = models
        return found

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._tokens = parse_tokens(self._read(), str(self.path))
        except (OSError, TokenFileError) as exc:  # keep the tokens we have rather than lock everyone out
            log.warning("token file changed but was not applied: %s", exc)
            return
        self._stamp = stamp
        log.info("token file reloaded: %d tokens", len(self._tokens))

    def _read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenFileError(f"{self.path}: {exc.strerror}") from None

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return 0, 0


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with ``code``."""
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[handler.request_streaming, handler.response_streaming]
    return make(refusing(code, message, handler.response_streaming), handler.request_deserializer,
                handler.response_serializer)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid bearer token (UNAUTHENTICATED), on every service but health; which
    models a token may use is checked where the model is known (``RpcMeter``)."""

    def __init__(self, tokens: TokenTable, access_log: AccessLog | None = None) -> None:
        self.tokens = tokens
        self.access_log = access_log

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        if self.tokens.models_for(bearer_token(handler_call_details.invocation_metadata)) is None:
            if self.access_log is not None:  # refused before any servicer sees it: the meter cannot log it
                api, method = api_and_method(handler_call_details.method)
                self.access_log.record(api, method, "", False, "", 0, 0.0, "UNAUTHENTICATED")
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "a valid token is required: send the metadata 'authorization: Bearer <token>'")
        return handler
