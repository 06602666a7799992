"""Wrapping gRPC method handlers, for interceptors that must see the call context.

``grpc.ServerInterceptor.intercept_service`` receives only the method name,
not the ``ServicerContext``. Interceptors that need the verified peer
certificate, or the final status of a streaming call, therefore wrap the
handler's behaviour function instead. This module is the one place that knows
the four gRPC handler shapes.

With ``decode=True`` the request bytes are parsed inside the wrapped
behaviour instead of by gRPC before it: a request that does not parse then
fails inside the interceptors (recorded, and after admission) with
INVALID_ARGUMENT, instead of being refused by gRPC before any interceptor
sees the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

__all__ = ["MALFORMED_MESSAGE", "Behavior", "wrap_rpc_handler"]

#: What a peer is told when its request message does not parse.
MALFORMED_MESSAGE = "malformed request message"

#: A handler's behaviour: (request or request iterator, context) -> response or response iterator.
Behavior = Callable[[Any, grpc.ServicerContext], Any]
#: Builds the wrapped behaviour from the original one and whether responses stream.
Wrapper = Callable[[Behavior, bool], Behavior]


def _parse(parse: Callable[[bytes], Any], raw: bytes, context: grpc.ServicerContext) -> Any:
    try:
        return parse(raw)
    except Exception:  # noqa: BLE001 -- any parser failure is the sender's malformed message
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)
        raise AssertionError("ServicerContext.abort returned") from None


def _decoding(
    behavior: Behavior, parse: Callable[[bytes], Any] | None, request_streaming: bool
) -> Behavior:
    """``behavior`` fed parsed messages from raw request bytes."""
    if parse is None:
        return behavior
    if not request_streaming:

        def one(raw: bytes, context: grpc.ServicerContext) -> Any:
            return behavior(_parse(parse, raw, context), context)

        return one

    def many(raws: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        return behavior((_parse(parse, raw, context) for raw in raws), context)

    return many


def wrap_rpc_handler(
    handler: grpc.RpcMethodHandler | None, wrap: Wrapper, *, decode: bool = False
) -> Any:
    """Return a handler of the same shape whose behaviour is ``wrap(behavior, streaming)``.

    With ``decode``, the behaviour given to ``wrap`` parses the request bytes itself.
    """
    if handler is None:
        return None
    parse = handler.request_deserializer
    deserializer = None if decode else parse

    def wrapped(behavior: Behavior, request_streaming: bool, streaming: bool) -> Behavior:
        if decode:
            behavior = _decoding(behavior, parse, request_streaming)
        return wrap(behavior, streaming)

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrapped(handler.unary_unary, False, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrapped(handler.unary_stream, False, True),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrapped(handler.stream_unary, True, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            wrapped(handler.stream_stream, True, True),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
