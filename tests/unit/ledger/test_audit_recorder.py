"""The node's audit recorder: durable files, and an access whose record fails is refused."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.canonical import loads
from ledger.errors import StorageError
from ledger.store import LedgerStore
from node.audit.actor import acting_as
from node.audit.interceptor import AuditInterceptor
from node.audit.recorder import AuditRecorder, open_audit
from node.config import NodeConfig
from node.server.peer import OPERATOR


def _config(home: Path) -> NodeConfig:
    return NodeConfig(
        home=home,
        federation="testfed",
        department="alpha",
        display_name="Alpha",
        listen="127.0.0.1:0",
        endpoint="127.0.0.1:0",
        rpc_timeout_seconds=5.0,
        data_dir=home / "data",
        ledger_dir=home / "ledger",
        log_level="info",
    )


def _no_directory() -> Any:
    raise AssertionError("not used")


def test_open_audit_syncs_a_new_ledger_directory(tmp_path: Path, synced: list[str]) -> None:
    """The ledger directory's own name must survive a power loss, not only the files in it."""
    home = tmp_path / "home"
    home.mkdir()
    recorder = open_audit(_config(home), Ed25519PrivateKey.generate(), _no_directory)
    try:
        assert recorder.record("node.started") == 0
    finally:
        recorder.close()
    assert str(home) in synced  # the entry naming ledger/
    assert str(home / "ledger") in synced  # the entries naming the two files


class _Sink:
    def __init__(self, recorder: AuditRecorder) -> None:
        self.recorder = recorder

    def record(self, event: str, **fields: Any) -> int:
        return self.recorder.record(event, **fields)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[AuditRecorder]:
    made = open_audit(_config(tmp_path), Ed25519PrivateKey.generate(), _no_directory)
    yield made
    made.close()


def test_an_access_whose_record_cannot_be_written_is_refused(
    recorder: AuditRecorder, tmp_path: Path
) -> None:
    """No record, no access: the handler never runs and the caller gets an error."""
    ran: list[str] = []

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append("unary")
        return b"data"

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        ran.append("stream")
        yield b"data"

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[AuditInterceptor(_Sink(recorder), surface="admin")],
    )
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert channel.unary_unary("/t.T/Unary")(b"", timeout=5) == b"data"
        assert ran == ["unary"]
        # The ledger can no longer be written: its writer is gone.
        recorder.store.close()
        with pytest.raises(StorageError, match="closed"):
            recorder.record("x.y")
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/t.T/Unary")(b"", timeout=5)
        assert caught.value.code() != grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError):
            list(channel.unary_stream("/t.T/Stream")(b"", timeout=5))
        assert ran == ["unary"]
    finally:
        channel.close()
        server.stop(None).wait()
    with LedgerStore(tmp_path / "ledger" / "ledger.sqlite", "alpha") as store:
        events = [body for _, body, _ in store.iter_entries()]
    assert len(events) == 2  # rpc.started and rpc.finished of the one call that ran


def test_an_erasure_is_recorded_with_it_by_whoever_ran_it(recorder: AuditRecorder) -> None:
    seq = recorder.record(
        "case.opened", detail={"person": "A. Citizen"}, sensitive=["detail.person"]
    )
    with acting_as(OPERATOR):
        erasure = recorder.erase(seq, "detail.person", agreement="agr-1", detail={"why": "request"})
    assert erasure.deleted and erasure.recorded == seq + 1
    entry = loads(recorder.store.entry(seq + 1))
    assert (entry["event"], entry["actor"], entry["agreement"]) == (
        "ledger.erased",
        OPERATOR,
        "agr-1",
    )
    assert entry["detail"] == {"seq": seq, "field": "detail.person", "why": "request"}
    with pytest.raises(StorageError, match="holds no stored value"):
        recorder.erase(seq, "detail.person")
    assert recorder.store.size == seq + 2  # the refused one recorded nothing
