"""The RPC audit interceptor over a real gRPC server: before and after every call, streams too."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from ledger.canonical import loads
from ledger.errors import StorageError
from ledger.store import LedgerStore
from node.audit.interceptor import UNRECORDED_MESSAGE, AuditInterceptor
from node.identity.authority import Authority
from node.identity.home import init_home
from protocols.fednode.v1 import admin_pb2


class StoreSink:
    """The runtime's audit interface over a real store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def record(self, event: str, **fields: Any) -> int:
        seq, _ = self.store.append({"event": event, **fields})
        return seq


def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _denied(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "no agreement")
    return b""


def _broken(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("bug")


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(3):
        yield bytes([i])


_ENTERED = threading.Event()


def _until_cancelled(request: bytes, context: grpc.ServicerContext) -> bytes:
    _ENTERED.set()
    deadline = time.monotonic() + 5
    while context.is_active() and time.monotonic() < deadline:
        time.sleep(0.02)
    return b"late"


def _ok_call(request: admin_pb2.AdminCall, context: grpc.ServicerContext) -> bytes:
    return b""


def _slow_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in range(100):  # at most 5 s, if nobody cancels
        yield b"\x00"
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[grpc.Channel, LedgerStore]]:
    store = LedgerStore(tmp_path / "l.db", "alpha")
    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[AuditInterceptor(StoreSink(store), surface="admin")],
    )
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Denied": grpc.unary_unary_rpc_method_handler(_denied),
        "Broken": grpc.unary_unary_rpc_method_handler(_broken),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "SlowStream": grpc.unary_stream_rpc_method_handler(_slow_stream),
        "UntilCancelled": grpc.unary_unary_rpc_method_handler(_until_cancelled),
        "Admin": grpc.unary_unary_rpc_method_handler(
            _ok_call, request_deserializer=admin_pb2.AdminCall.FromString
        ),
    }
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, store
    channel.close()
    srv.stop(None).wait()
    store.close()


def _entries(store: LedgerStore) -> list[dict[str, Any]]:
    return [loads(body) for _, body, _ in store.iter_entries()]


@pytest.mark.parametrize(
    ("method", "outcome", "code"),
    [("Ok", "ok", "OK"), ("Denied", "denied", "PERMISSION_DENIED"), ("Broken", "error", "UNKNOWN")],
)
def test_unary_calls_are_recorded_before_and_after(
    server: tuple[grpc.Channel, LedgerStore], method: str, outcome: str, code: str
) -> None:
    channel, store = server
    call = channel.unary_unary(f"/t.T/{method}")
    try:
        call(b"x", timeout=5)
    except grpc.RpcError as e:
        assert e.code().name == code
    started, finished = _entries(store)
    assert started["event"] == "rpc.started"
    assert started["actor"] == "operator"
    assert started["detail"] == {"method": f"/t.T/{method}", "surface": "admin"}
    assert finished["event"] == "rpc.finished"
    assert finished["outcome"] == outcome
    assert finished["detail"]["code"] == code


def test_stream_is_recorded_when_it_ends(server: tuple[grpc.Channel, LedgerStore]) -> None:
    channel, store = server
    replies = list(channel.unary_stream("/t.T/Stream")(b"", timeout=5))
    assert replies == [b"\x00", b"\x01", b"\x02"]
    events = [(e["event"], e["outcome"]) for e in _entries(store)]
    assert events == [("rpc.started", "ok"), ("rpc.finished", "ok")]


def test_a_stream_the_client_leaves_is_recorded_as_cancelled_not_failed(
    server: tuple[grpc.Channel, LedgerStore],
) -> None:
    channel, store = server
    call = channel.unary_stream("/t.T/SlowStream")(b"", timeout=10)
    assert next(call) == b"\x00"
    call.cancel()
    deadline = time.monotonic() + 10
    while len(_entries(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    started, finished = _entries(store)
    assert (started["event"], finished["event"]) == ("rpc.started", "rpc.finished")
    assert (finished["outcome"], finished["detail"]["code"]) == ("cancelled", "CANCELLED")


def test_admin_calls_name_their_command_in_both_entries(
    server: tuple[grpc.Channel, LedgerStore],
) -> None:
    channel, store = server
    call = admin_pb2.AdminCall(command="share.fetch", args_json=b"{}").SerializeToString()
    channel.unary_unary("/t.T/Admin")(call, timeout=5)
    started, finished = _entries(store)
    assert started["detail"]["command"] == finished["detail"]["command"] == "share.fetch"
    assert finished["outcome"] == "ok"


def test_a_unary_call_its_client_cancelled_is_recorded_as_cancelled_not_ok(
    server: tuple[grpc.Channel, LedgerStore],
) -> None:
    # The handler returned, but its response was never delivered.
    channel, store = server
    _ENTERED.clear()
    future = channel.unary_unary("/t.T/UntilCancelled").future(b"", timeout=10)
    assert _ENTERED.wait(5)
    future.cancel()
    deadline = time.monotonic() + 10
    while len(_entries(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    _started, finished = _entries(store)
    assert (finished["event"], finished["outcome"]) == ("rpc.finished", "cancelled")
    assert finished["detail"]["code"] == "CANCELLED"


class _TlsContext:
    """The part of a ServicerContext the interceptor reads, for a call over TLS."""

    def __init__(self, cert_pem: bytes) -> None:
        self._auth = {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert_pem]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def code(self) -> None:
        return None

    def is_active(self) -> bool:
        return True


@dataclass(frozen=True)
class _Details:
    method: str


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("certs")
    issued = {}
    for federation in ("city", "county"):
        ca = Authority.create(root / f"ca-{federation}", federation)
        request = init_home(
            root / federation,
            federation=federation,
            department="traffic",
            display_name="traffic",
            listen="127.0.0.1:0",
            endpoint="127.0.0.1:1",
        )
        issued[federation] = ca.issue(request).pem
    return issued


@pytest.mark.parametrize(
    ("federation", "peer", "problem"),
    [
        ("city", "traffic", None),
        # Another federation's 'traffic' is not this federation's 'traffic'.
        ("county", None, "certificate of federation 'county'"),
    ],
)
def test_the_peer_is_recorded_only_for_this_federations_certificates(
    tmp_path: Path,
    certificates: dict[str, bytes],
    federation: str,
    peer: str | None,
    problem: str | None,
) -> None:
    store = LedgerStore(tmp_path / "l.db", "alpha")
    try:
        interceptor = AuditInterceptor(StoreSink(store), surface="network", federation="city")
        handler = interceptor.intercept_service(
            lambda _d: grpc.unary_unary_rpc_method_handler(_ok), _Details("/t.T/Ok")
        )
        assert handler is not None
        assert handler.unary_unary(b"x", _TlsContext(certificates[federation])) == b"x"
        started, finished = _entries(store)
    finally:
        store.close()
    assert started["peer"] == finished["peer"] == peer
    assert started["detail"].get("caller_problem") == problem


class _FailingSink:
    """An audit sink whose ledger cannot be written after ``ok`` records."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.events: list[str] = []

    def record(self, event: str, **fields: Any) -> int:
        if len(self.events) >= self.ok:
            raise StorageError(f"disk full writing {_LEDGER_PATH}")
        self.events.append(event)
        return len(self.events)


_LEDGER_PATH = "/var/lib/fednode/ledger/ledger.sqlite"


@pytest.mark.parametrize(
    ("method", "ok", "ran"),
    [
        ("Unary", 0, False),  # rpc.started cannot be written: the handler never runs
        ("Unary", 1, True),  # rpc.finished cannot be written: the result is withheld
        ("Stream", 0, False),
        ("Stream", 1, True),
    ],
)
def test_a_call_that_cannot_be_recorded_fails_without_the_ledgers_error(
    method: str, ok: int, ran: bool
) -> None:
    calls: list[str] = []

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append("unary")
        return b"data"

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        calls.append("stream")
        yield b"data"

    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[AuditInterceptor(_FailingSink(ok), surface="network")],
    )
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            if method == "Unary":
                channel.unary_unary("/t.T/Unary")(b"", timeout=5)
            else:
                list(channel.unary_stream("/t.T/Stream")(b"", timeout=5))
    finally:
        srv.stop(None).wait()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == UNRECORDED_MESSAGE
    assert bool(calls) == ran
