"""What one connection may cost the network server: a ping flood is cut off, and every option
the server is given is one gRPC knows (a misspelt one is silently ignored)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc._cython import cygrpc

from node.server.app import NETWORK_SERVER_OPTIONS


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _serve(handler: grpc.RpcMethodHandler, workers: int) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=list(NETWORK_SERVER_OPTIONS)
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"Call": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_every_server_option_is_one_grpc_knows() -> None:
    # gRPC ignores an unknown channel argument without a word; the ping limit
    # was once set under a name it does not read.
    core = Path(cygrpc.__file__).read_bytes()
    unknown = [name for name, _ in NETWORK_SERVER_OPTIONS if name.encode() not in core]
    assert unknown == []


def test_a_peer_flooding_pings_is_disconnected(release: threading.Event) -> None:
    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(10)
        return b"done"

    server, port = _serve(grpc.unary_unary_rpc_method_handler(wait), workers=2)
    # gRPC's client sends at most one ping a second, still ten times what the server allows.
    abusive = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    started = time.monotonic()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}", options=abusive) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            channel.unary_unary("/t.T/Call")(b"", timeout=9)
    finally:
        release.set()
        server.stop(None).wait()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert re.search("too many pings", raised.value.details() or "", re.IGNORECASE)
    assert time.monotonic() - started < 8
