"""Wrapping gRPC method handlers, for interceptors that must see the call context.

``grpc.ServerInterceptor.intercept_service`` receives only the method name,
not the ``ServicerContext``. Interceptors that need the verified peer
certificate, or the final status of a streaming call, therefore wrap the
handler's behaviour function instead. This module is the one place that knows
the four gRPC handler shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["Behavior", "wrap_rpc_handler"]

#: A handler's behaviour: (request or request iterator, context) -> response or response iterator.
Behavior = Callable[[Any, grpc.ServicerContext], Any]
#: Builds the wrapped behaviour from the original one and whether responses stream.
Wrapper = Callable[[Behavior, bool], Behavior]


def wrap_rpc_handler(handler: grpc.RpcMethodHandler | None, wrap: Wrapper) -> Any:
    """Return a handler of the same shape whose behaviour is ``wrap(behavior, streaming)``."""
    if handler is None:
        return None
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
