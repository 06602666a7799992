"""AddCheckpoint over real gRPC: a witness that cannot store or record ends the
call with a fixed message and a status the publishing log can act on, never the
storage error's text or a bare INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.checkpoint import sign_checkpoint
from ledger.errors import LedgerDamageError, StorageError
from node.audit import service as audit_service
from node.audit.service import WITNESS_DAMAGED, WITNESS_UNAVAILABLE, LedgerService
from protocols.fednode.v1 import ledger_pb2, ledger_pb2_grpc

SECRET = "/var/lib/fednode/ledger/witness.sqlite: disk I/O error"


@dataclass
class _FailingWitness:
    error: Exception

    def add_checkpoint(self, old_size: int, proof: list[bytes], note: bytes) -> Any:
        raise self.error


@dataclass
class _Recorder:
    witness: _FailingWitness
    federation: str = "gov"
    records: list[str] = field(default_factory=list)

    def record(self, event: str, **_: Any) -> int:
        self.records.append(event)
        return len(self.records)


@pytest.fixture
def call(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(audit_service, "caller_department", lambda _context: "alpha")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = LedgerService.__new__(LedgerService)
    ledger_pb2_grpc.add_LedgerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    note = sign_checkpoint(
        "fednode/gov/alpha", 1, b"\x01" * 32, ed25519.Ed25519PrivateKey.generate()
    )

    def add(error: Exception) -> grpc.RpcError:
        # A fake with the parts of AuditRecorder that AddCheckpoint uses.
        servicer.recorder = _Recorder(_FailingWitness(error))  # type: ignore[assignment]
        stub = ledger_pb2_grpc.LedgerStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.AddCheckpoint(ledger_pb2.AddCheckpointRequest(note=note), timeout=10)
        return raised.value

    yield add
    channel.close()
    server.stop(None)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (StorageError(SECRET), grpc.StatusCode.UNAVAILABLE, WITNESS_UNAVAILABLE),
        (LedgerDamageError(SECRET), grpc.StatusCode.DATA_LOSS, WITNESS_DAMAGED),
    ],
)
def test_a_witness_storage_failure_ends_with_a_fixed_message(
    call: Any,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    code: grpc.StatusCode,
    message: str,
) -> None:
    failure = call(error)
    assert failure.code() == code
    assert failure.details() == message
    assert "disk I/O" not in failure.details()
    # The cause is in the local log, for the operator.
    assert SECRET in caplog.text
