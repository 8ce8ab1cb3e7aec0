"""Registering servicers so that requests which are not valid protobuf get INVALID_ARGUMENT.

grpcio's generated ``add_*_to_server`` functions decode each request with ``FromString``: bytes that do
not parse end the RPC with UNKNOWN and log a traceback (a stream just ends, OK, with fewer answers than
requests). ``register_services`` builds the same handlers from each service's descriptor, with a decoder
that turns a parse failure into a ``MalformedRequest`` value; the call is then refused with
INVALID_ARGUMENT and a message, and a stream ends with that status after answering what came before.

Large messages (``ByteBudget.large_bytes`` or more) are decoded by the handler, not by gRPC's deserializer,
once the byte budget admits them: past it they are refused with RESOURCE_EXHAUSTED before being decoded. And
the handlers clear the variables of the frames an error passed through (``forget_locals``), so that nothing a
refused request decoded outlives it.

The methods that carry images are *registered* with gRPC (``IMAGE_METHODS``), the rest share one generic
handler. grpc.aio keeps one call request outstanding in gRPC core per registered method and one for
all generic ones, and each accepted call waits for the event loop to come round before the next is
asked for: with one request for every method, calls of every kind queued in core behind each other
(and were refused past ``--max-pending-calls``) while the loop had time to spare (a 60 s soak at 550
calls/s of the mixed traffic: 970 calls refused with one generic handler, 5 with registered methods).
Not every method is registered because grpc.aio waits on all the outstanding requests at each
accepted call (``asyncio.wait``): 46 us per call with all 24 methods, 22 us with these 6, 17 us with one.
"""

from __future__ import annotations

import inspect
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from tfclassify.server.apis.admission import ByteBudget
from tfclassify.server.apis.refusals import refusing


class MalformedRequest:
    """Stands for a request message whose bytes did not parse."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class LargeRequest:
    """The bytes of a large request message, decoded by the handler once the byte budget admits them."""

    __slots__ = ("data", "decode")

    def __init__(self, data: bytes, decode: Callable[[bytes], object]) -> None:
        self.data, self.decode = data, decode


def _decoder(message_class, budget: ByteBudget | None) -> Callable[[bytes], object]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> object:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(f"the request is not a valid {name} message ({len(data)} bytes)")

    if budget is None:
        return decode
    large = budget.large_bytes

    def decode_or_defer(data: bytes) -> object:
        return LargeRequest(data, decode) if len(data) >= large else decode(data)

    return decode_or_defer


def _serialize(message) -> bytes:
    return message.SerializeToString()


def forget_locals(error: BaseException) -> None:
    """Clear the variables of the finished frames in the tracebacks of ``error`` and of the errors it chains.

    grpc.aio keeps an aborted call's ``AbortError`` in the call's state, which the ``context`` variable of every
    frame in its traceback references: a reference cycle, freed only by a full garbage collection, that held
    each refused request alive with everything its frames decoded (a 64 MiB request: about 200 MB, for minutes).
    """
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still running are left as they are
        pending += (current.__cause__, current.__context__)


async def _admitted(request, context: grpc.aio.ServicerContext, budget: ByteBudget | None) -> tuple[object, int]:
    """``(request, bytes admitted)``: a large request decoded once the budget admits it (else the call is
    refused with RESOURCE_EXHAUSTED); a malformed one refused with INVALID_ARGUMENT."""
    admitted = 0
    if type(request) is LargeRequest:
        refused = budget.admit(len(request.data))
        if refused is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        admitted = len(request.data)
        try:
            request = request.decode(request.data)
        except BaseException:
            budget.release(admitted)
            raise
    if type(request) is MalformedRequest:
        if admitted:
            budget.release(admitted)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
    return request, admitted


def _unary_request(behavior, budget: ByteBudget | None):
    async def handle(request, context: grpc.aio.ServicerContext):
        admitted = 0
        try:
            request, admitted = await _admitted(request, context, budget)
            return await behavior(request, context)
        except BaseException as error:
            request = None  # this frame stays in the traceback: it must not hold the request either
            forget_locals(error)
            raise
        finally:
            if admitted:
                budget.release(admitted)

    return handle


def _unary_request_stream_response(behavior, budget: ByteBudget | None):
    if not inspect.isasyncgenfunction(behavior):  # a coroutine that answers with context.write (grpc_health's Watch)
        return _unary_request(behavior, budget)

    async def handle(request, context: grpc.aio.ServicerContext):
        admitted = 0
        try:
            request, admitted = await _admitted(request, context, budget)
            async for response in behavior(request, context):
                yield response
        except BaseException as error:
            request = None  # as in _unary_request
            forget_locals(error)
            raise
        finally:
            if admitted:
                budget.release(admitted)

    return handle


class _StreamedRequests:
    """A stream's request messages as the servicer reads them: large ones admitted by the byte budget and
    decoded, the first that is malformed or refused ending the stream (``ending``: its status and message).
    ``sizes`` holds, oldest first, the bytes admitted for each request read (0 for small ones): each is
    released when the stream answers its request (the servicers answer each request once, in order)."""

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.ending: tuple[grpc.StatusCode, str] | None = None
        self.sizes: deque[int] = deque()
        self.held = 0

    async def read(self, iterator: AsyncIterator) -> AsyncIterator:
        index = 0
        async for request in iterator:
            size = 0
            if type(request) is LargeRequest:
                refused = self.budget.admit(len(request.data), own=self.held)
                if refused is not None:
                    self.ending = (grpc.StatusCode.RESOURCE_EXHAUSTED, f"request {index} of the stream: {refused}")
                    return
                size = len(request.data)
                self.held += size
                request = request.decode(request.data)
            self.sizes.append(size)
            if type(request) is MalformedRequest:
                self.ending = (grpc.StatusCode.INVALID_ARGUMENT, f"request {index} of the stream: {request.message}")
                return  # the servicer answers what came before; the call then ends with the error
            index += 1
            yield request

    def answered(self) -> None:
        """One more request answered: the bytes of the oldest one are free."""
        if self.sizes:
            self._release(self.sizes.popleft())

    def release_all(self) -> None:
        while self.sizes:
            self._release(self.sizes.popleft())

    def _release(self, size: int) -> None:
        if size:
            self.held -= size
            self.budget.release(size)


def _stream_request(behavior, stream_response: bool, budget: ByteBudget | None):
    if stream_response:
        async def handle_stream(iterator, context: grpc.aio.ServicerContext):
            requests = _StreamedRequests(budget)
            try:
                async for response in behavior(requests.read(iterator), context):
                    yield response
                    requests.answered()
                if requests.ending is not None:
                    await context.abort(*requests.ending)
            except BaseException as error:
                forget_locals(error)  # as in _unary_request
                raise
            finally:
                requests.release_all()

        return handle_stream

    async def handle(iterator, context: grpc.aio.ServicerContext):
        requests = _StreamedRequests(budget)
        try:
            response = await behavior(requests.read(iterator), context)
            if requests.ending is not None:
                await context.abort(*requests.ending)
            return response
        except BaseException as error:
            forget_locals(error)  # as in _unary_request
            raise
        finally:
            requests.release_all()

    return handle


def _unimplemented(name: str, stream_response: bool):
    return refusing(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by tfclassify", stream_response)


#: The methods that carry images, each accepted on its own (see the module's docstring).
IMAGE_METHODS = frozenset({
    "tfclassify.v1.Classifier/Classify",
    "tfclassify.v1.Classifier/ClassifyStream",
    "tensorflow.serving.PredictionService/Predict",
    "tensorflow.serving.PredictionService/Classify",
    "inference.GRPCInferenceService/ModelInfer",
    "inference.GRPCInferenceService/ModelStreamInfer",
})


def register_services(server: grpc.aio.Server, services: Iterable[tuple[ServiceDescriptor, object]],
                      registered: Collection[str] = IMAGE_METHODS, budget: ByteBudget | None = None) -> None:
    """Add every method of each (service descriptor, servicer) pair to ``server``, before it starts: those named
    in ``registered`` ("package.Service/Method") as registered methods, the others in one generic handler; with
    ``budget``, large request messages are decoded once it admits them."""
    generic = []
    for service, servicer in services:
        handlers = method_handlers(service, servicer, budget)
        own = {name: h for name, h in handlers.items() if f"{service.full_name}/{name}" in registered}
        if own:
            server.add_registered_method_handlers(service.full_name, own)
        if len(own) < len(handlers):
            generic.append(grpc.method_handlers_generic_handler(
                service.full_name, {name: h for name, h in handlers.items() if name not in own}))
    server.add_generic_rpc_handlers(tuple(generic))


def method_handlers(service: ServiceDescriptor, servicer: object,
                    budget: ByteBudget | None = None) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers of ``service`` (every method the descriptor lists) on ``servicer``'s async methods, with
    undecodable requests refused as INVALID_ARGUMENT, large ones past ``budget`` as RESOURCE_EXHAUSTED, and the
    methods it does not implement as UNIMPLEMENTED (without the traceback the generated base class's stub
    logs)."""
    handlers = {}
    for method in service.methods:
        behavior = getattr(servicer, method.name)
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            # The generated base class's stub: it would log a traceback per call.
            behavior = _unimplemented(f"{service.full_name}.{method.name}", method.server_streaming)
        # Only the methods that carry images are budgeted: a long-lived call of another (health's Watch, say)
        # must not hold the budget while it waits.
        method_budget = budget if f"{service.full_name}/{method.name}" in IMAGE_METHODS else None
        decode = _decoder(GetMessageClass(method.input_type), method_budget)
        if not method.client_streaming and not method.server_streaming:
            handler = grpc.unary_unary_rpc_method_handler(_unary_request(behavior, method_budget), decode, _serialize)
        elif not method.client_streaming:
            handler = grpc.unary_stream_rpc_method_handler(_unary_request_stream_response(behavior, method_budget), decode,
                                                           _serialize)
        elif not method.server_streaming:
            handler = grpc.stream_unary_rpc_method_handler(_stream_request(behavior, False, method_budget), decode,
                                                           _serialize)
        else:
            handler = grpc.stream_stream_rpc_method_handler(_stream_request(behavior, True, method_budget), decode,
                                                            _serialize)
        handlers[method.name] = handler
    return handlers
