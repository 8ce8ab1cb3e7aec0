"""Registering servicers so that requests which are not valid protobuf get INVALID_ARGUMENT.

grpcio's generated ``add_*_to_server`` functions decode each request with ``FromString``: bytes that do
not parse end the RPC with UNKNOWN and log a traceback (a stream just ends, OK, with fewer answers than
requests). ``register_services`` builds the same handlers from each service's descriptor, with a decoder
that turns a parse failure into a ``MalformedRequest`` value; the call is then refused with
INVALID_ARGUMENT and a message, and a stream ends with that status after answering what came before.

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
from collections.abc import AsyncIterator, Callable, Collection, Iterable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass


class MalformedRequest:
    """Stands for a request message whose bytes did not parse."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _decoder(message_class) -> Callable[[bytes], object]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> object:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(f"the request is not a valid {name} message ({len(data)} bytes)")

    return decode


def _serialize(message) -> bytes:
    return message.SerializeToString()


def _unary_request(behavior):
    async def handle(request, context: grpc.aio.ServicerContext):
        if type(request) is MalformedRequest:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behavior(request, context)

    return handle


def _unary_request_stream_response(behavior):
    if not inspect.isasyncgenfunction(behavior):  # a coroutine that answers with context.write (grpc_health's Watch)
        return _unary_request(behavior)

    async def handle(request, context: grpc.aio.ServicerContext):
        if type(request) is MalformedRequest:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for response in behavior(request, context):
            yield response

    return handle


def _stream_request(behavior, stream_response: bool):
    async def requests(iterator: AsyncIterator, malformed: list[str]) -> AsyncIterator:
        index = 0
        async for request in iterator:
            if type(request) is MalformedRequest:
                malformed.append(f"request {index} of the stream: {request.message}")
                return  # the servicer answers what came before; the call then ends with the error
            index += 1
            yield request

    if stream_response:
        async def handle_stream(iterator, context: grpc.aio.ServicerContext):
            malformed: list[str] = []
            async for response in behavior(requests(iterator, malformed), context):
                yield response
            if malformed:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed[0])

        return handle_stream

    async def handle(iterator, context: grpc.aio.ServicerContext):
        malformed: list[str] = []
        response = await behavior(requests(iterator, malformed), context)
        if malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed[0])
        return response

    return handle


def _unimplemented(name: str, stream_response: bool):
    message = f"{name} is not implemented by tfclassify"
    if stream_response:
        async def refuse_stream(request, context: grpc.aio.ServicerContext):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield  # an async generator, as the handler of a streamed response must be

        return refuse_stream

    async def refuse(request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return refuse


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
                      registered: Collection[str] = IMAGE_METHODS) -> None:
    """Add every method of each (service descriptor, servicer) pair to ``server``, before it starts: those named
    in ``registered`` ("package.Service/Method") as registered methods, the others in one generic handler."""
    generic = []
    for service, servicer in services:
        handlers = method_handlers(service, servicer)
        own = {name: h for name, h in handlers.items() if f"{service.full_name}/{name}" in registered}
        if own:
            server.add_registered_method_handlers(service.full_name, own)
        if len(own) < len(handlers):
            generic.append(grpc.method_handlers_generic_handler(
                service.full_name, {name: h for name, h in handlers.items() if name not in own}))
    server.add_generic_rpc_handlers(tuple(generic))


def method_handlers(service: ServiceDescriptor, servicer: object) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers of ``service`` (every method the descriptor lists) on ``servicer``'s async methods, with
    undecodable requests refused as INVALID_ARGUMENT, and the methods it does not implement as UNIMPLEMENTED
    (without the traceback the generated base class's stub logs)."""
    handlers = {}
    for method in service.methods:
        behavior = getattr(servicer, method.name)
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            # The generated base class's stub: it would log a traceback per call.
            behavior = _unimplemented(f"{service.full_name}.{method.name}", method.server_streaming)
        decode = _decoder(GetMessageClass(method.input_type))
        if not method.client_streaming and not method.server_streaming:
            handler = grpc.unary_unary_rpc_method_handler(_unary_request(behavior), decode, _serialize)
        elif not method.client_streaming:
            handler = grpc.unary_stream_rpc_method_handler(_unary_request_stream_response(behavior), decode,
                                                           _serialize)
        elif not method.server_streaming:
            handler = grpc.stream_unary_rpc_method_handler(_stream_request(behavior, False), decode, _serialize)
        else:
            handler = grpc.stream_stream_rpc_method_handler(_stream_request(behavior, True), decode, _serialize)
        handlers[method.name] = handler
    return handlers
