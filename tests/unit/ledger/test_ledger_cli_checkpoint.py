"""``fednode ledger checkpoint`` tells a witness's fork report from an outage.

The witnesses here are gRPC servers implementing the real ``Ledger`` service
interface on loopback; each wraps a real :class:`ledger.witness.Witness` and
answers the way the node's service does (FAILED_PRECONDITION for a fork,
ABORTED with its size for a size conflict), or is simply down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from ledger.errors import WitnessError
from ledger.store import LedgerStore
from ledger.witness import ForkError, WitnessConflictError
from node.audit.convert import cosignature_to_proto, submission_from_proto
from node.audit.publisher import publish_checkpoint
from node.audit.service import WITNESS_SIZE_KEY
from node.cli import ledger as ledger_cli
from node.cli.main import main
from protocols.fednode.v1 import ledger_pb2, ledger_pb2_grpc
from tests.unit.ledger.helpers import FEDERATION, Federation, fill


class _WitnessServicer(ledger_pb2_grpc.LedgerServicer):  # type: ignore[misc]
    def __init__(self, fed: Federation, department: str) -> None:
        self.witness = fed.witnesses[department]

    def AddCheckpoint(
        self, request: ledger_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.AddCheckpointResponse:
        sub = submission_from_proto(request)
        try:
            line = self.witness.add_checkpoint(sub.old_size, sub.proof, sub.note)
        except WitnessConflictError as e:
            context.set_trailing_metadata(((WITNESS_SIZE_KEY, str(e.witness_size)),))
            context.abort(grpc.StatusCode.ABORTED, f"witness holds size {e.witness_size}")
        except ForkError:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "checkpoint is inconsistent")
        except WitnessError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "checkpoint refused")
        return cosignature_to_proto(line)


@dataclass
class _Entry:
    department: str
    ed25519_public: bytes


@dataclass
class _Directory:
    entries: dict[str, _Entry]
    witness_threshold: int

    @property
    def witnesses(self) -> list[_Entry]:
        return list(self.entries.values())

    def get(self, department: str) -> _Entry:
        return self.entries[department]


@dataclass
class _Runtime:
    department: str
    directory: _Directory
    addresses: dict[str, str]

    def peer_channel(self, department: str) -> grpc.Channel:
        return grpc.insecure_channel(self.addresses[department])


@dataclass
class _Recorder:
    store: LedgerStore
    origin: str
    signing_key: Any
    federation: str = FEDERATION
    publish_lock: threading.Lock = field(default_factory=threading.Lock)
    records: list[dict[str, Any]] = field(default_factory=list)

    def record(self, event: str, **fields: Any) -> int:
        self.records.append({"event": event, **fields})
        return len(self.records)


@pytest.fixture
def servers(federation: Federation) -> Iterator[dict[str, str]]:
    """beta and gamma witness over loopback gRPC; 'delta' is listed but down."""
    running = []
    addresses = {}
    for dept in ("beta", "gamma"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        ledger_pb2_grpc.add_LedgerServicer_to_server(_WitnessServicer(federation, dept), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        running.append(server)
        addresses[dept] = f"127.0.0.1:{port}"
    addresses["delta"] = "127.0.0.1:1"
    yield addresses
    for server in running:
        server.stop(None)


def _publish(federation: Federation, addresses: dict[str, str], threshold: int) -> Any:
    entries = {
        d: _Entry(
            d, federation.keys[d if d != "delta" else "gamma"].public_key().public_bytes_raw()
        )
        for d in addresses
    }
    runtime = _Runtime("alpha", _Directory(entries, threshold), addresses)
    recorder = _Recorder(
        federation.store("alpha"), federation.origin("alpha"), federation.keys["alpha"]
    )
    events: list[dict[str, Any]] = []
    result = publish_checkpoint(runtime, recorder, events.append)  # type: ignore[arg-type]
    return result, events, recorder


def _fork_gamma(federation: Federation, tmp_path: Any) -> None:
    """gamma cosigns a different alpha history of the same size first."""
    other = LedgerStore(tmp_path / "forked-alpha.sqlite", "alpha")
    try:
        fill(other, 8, start=1000)
        cp = other.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
        federation.witnesses["gamma"].add_checkpoint(0, [], cp.note)
    finally:
        other.close()


def test_fork_is_an_incident_even_when_the_threshold_is_met(
    federation: Federation, servers: dict[str, str], tmp_path: Any
) -> None:
    _fork_gamma(federation, tmp_path)
    fill(federation.store("alpha"), 8)
    result, events, recorder = _publish(federation, servers, threshold=1)
    assert result.published
    assert result.cosigners == ["beta"]
    assert set(result.incidents) == {"gamma"}
    assert "inconsistent with the history it cosigned" in result.incidents["gamma"]
    # An outage is a failure, not an incident.
    assert "delta" in result.failures
    assert "delta" not in result.incidents
    flagged = {e["witness"]: e["incident"] for e in events if e["event"] == "witness_failed"}
    assert flagged == {"gamma": True, "delta": False}
    assert recorder.records[-1]["outcome"] == "error"
    assert set(recorder.records[-1]["detail"]["incidents"]) == {"gamma"}


def test_rollback_below_a_cosigned_size_is_an_incident(
    federation: Federation, servers: dict[str, str]
) -> None:
    # gamma cosigned size 8; the log now offers size 5 (entries were lost).
    store = federation.store("alpha")
    fill(store, 8)
    cp = store.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    federation.witnesses["gamma"].add_checkpoint(0, [], cp.note)
    store.close()
    del federation.stores["alpha"]
    replacement = federation.root / "alpha-restored.sqlite"
    federation.stores["alpha"] = LedgerStore(replacement, "alpha")
    fill(federation.stores["alpha"], 5)
    result, _, _ = _publish(federation, {"gamma": servers["gamma"]}, threshold=1)
    assert not result.published
    assert "witness gamma refused size 5" in result.incidents["gamma"]


def test_outage_alone_is_not_an_incident(federation: Federation, servers: dict[str, str]) -> None:
    fill(federation.store("alpha"), 3)
    result, _, _ = _publish(federation, servers, threshold=2)
    assert result.published
    assert result.incidents == {}
    assert list(result.failures) == ["delta"]


def _fake_invoke(events: list[dict[str, Any]], result: dict[str, Any]) -> Any:
    def invoke(home: Any, command: str, args: Any, on_event: Any = None) -> dict[str, Any]:
        assert command == "ledger.checkpoint"
        for event in events:
            on_event(event)
        return result

    return invoke


_SIGNED: dict[str, Any] = {"event": "signed", "size": 8, "witnesses": ["beta", "gamma"]}
_RESULT: dict[str, Any] = {
    "size": 8,
    "root": "",
    "cosigners": ["beta"],
    "threshold": 1,
    "published": True,
    "failures": {"gamma": "witness gamma refused size 8 as inconsistent"},
    "note": "",
}


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_exits_7_naming_the_witness(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    events: list[dict[str, Any]] = [
        _SIGNED,
        {"event": "cosigned", "witness": "beta"},
        {
            "event": "witness_failed",
            "witness": "gamma",
            "reason": "witness gamma refused size 8 as inconsistent",
            "incident": True,
        },
    ]
    monkeypatch.setattr(ledger_cli, "invoke", _fake_invoke(events, dict(_RESULT)))
    argv = ["ledger", "checkpoint", "--home", "/nonexistent"] + (["--json"] if as_json else [])
    assert main(argv) == 7
    out = capsys.readouterr()
    assert "fednode: error: witness incident: gamma refused size 8" in out.err
    assert "hint: treat it as an incident" in out.err
    if as_json:
        assert '"gamma": "witness gamma refused size 8 as inconsistent"' in out.out
    else:
        assert "INCIDENT" in out.out


def test_cli_outage_with_threshold_met_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[dict[str, Any]] = [
        _SIGNED,
        {"event": "cosigned", "witness": "beta"},
        {"event": "witness_failed", "witness": "gamma", "reason": "UNAVAILABLE", "incident": False},
    ]
    monkeypatch.setattr(ledger_cli, "invoke", _fake_invoke(events, dict(_RESULT)))
    assert main(["ledger", "checkpoint", "--home", "/nonexistent"]) == 0
    assert "INCIDENT" not in capsys.readouterr().out
