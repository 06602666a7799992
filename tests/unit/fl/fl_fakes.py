"""Fakes for the federated-learning unit tests, with the real interfaces' shapes.

``FakeRuntime`` has the ``FlRuntime`` shape (config, audit, peer_channel);
``FakePolicy`` implements ``DataPolicy`` over in-memory tables; ``Cluster``
runs one real gRPC server per participant on loopback (without TLS: the
caller's department is fixed by the test instead of read from a certificate).
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq

from node.errors import AccessDenied
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle
from node.fl.participant import Participant
from node.fl.service import FederatedServicer
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc


def agreement_id(name: str) -> str:
    """A well-formed agreement id standing for ``name`` (``agr-`` and 32 hex digits)."""
    return "agr-" + hashlib.sha256(name.encode()).hexdigest()[:32]


ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "seeds" / "apps" / "traffic-risk"
SEEDS = ROOT / "seeds" / "data"
#: Test department -> the seed department whose road_safety table it holds.
SEED_OF = {
    "traffic": "traffic",
    "security": "public-security",
    "health": "health",
    "civil": "civil-affairs",
}
sys.path.insert(0, str(APP))
# Re-exported (hence "as task"): the tests score models with it.
from traffic_risk import task as task  # type: ignore[import-not-found]  # noqa: E402, PLC0414

COORDINATOR = "planning"


def seed_table(department: str) -> pa.Table:
    """The committed seed ``road_safety`` table of a test department."""
    return pq.read_table(SEEDS / SEED_OF[department] / "road_safety.parquet")


@dataclass
class FakeConfig:
    home: Path
    department: str

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


@dataclass
class FakeAudit:
    entries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: str, **fields: Any) -> int:
        with self.lock:
            self.entries.append({"event": event, **fields})
            return len(self.entries)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.entries if e["event"] == name]


@dataclass
class FakeRuntime:
    config: FakeConfig
    audit: FakeAudit = field(default_factory=FakeAudit)
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    extensions: dict[str, object] = field(default_factory=dict)

    def peer_channel(self, department: str) -> grpc.Channel:
        return self.channels[department]


class FakePolicy:
    """Grants ``federated`` on one table to one coordinator, until revoked."""

    def __init__(
        self,
        audit: FakeAudit,
        table: pa.Table,
        coordinator: str = COORDINATOR,
        dataset: str = "incidents",
    ) -> None:
        self.audit = audit
        self.table = table
        self.coordinator = coordinator
        self.dataset_name = dataset
        self.revoked = False

    def dataset(self, agreement_id: str) -> str:
        """The dataset the agreement names, as the catalog policy tells it."""
        return self.dataset_name

    def admit(self, coordinator: str, agreement_id: str) -> pa.Table:
        if coordinator != self.coordinator or self.revoked:
            self.audit.record(
                "access.denied", peer=coordinator, agreement=agreement_id, outcome="denied"
            )
            raise AccessDenied(
                f"agreement {agreement_id} does not grant federated to {coordinator}"
            )
        return self.table

    def recheck(self, agreement_id: str) -> None:
        if self.revoked:
            raise AccessDenied(f"agreement {agreement_id} was revoked")


@dataclass
class Node:
    department: str
    runtime: FakeRuntime
    policy: FakePolicy
    participant: Participant
    server: grpc.Server
    port: int


class Cluster:
    """Participants with real gRPC servers, and a coordinator runtime wired to them."""

    def __init__(self, tmp: Path, departments: list[str], *, approve: Sequence[Path] = ()) -> None:
        self.tmp = tmp
        self.nodes: dict[str, Node] = {}
        self.coordinator = FakeRuntime(FakeConfig(tmp / COORDINATOR, COORDINATOR))
        for department in departments:
            self.add(department, seed_table(department), approve)

    def add(self, department: str, table: pa.Table, approve: Any = ()) -> Node:
        runtime = FakeRuntime(FakeConfig(self.tmp / department, department))
        approvals = ApprovalStore.for_data_dir(runtime.config.data_dir)
        for app in approve:
            approvals.approve(str(self.fab(app)))
        policy = FakePolicy(runtime.audit, table)
        participant = Participant(runtime, policy=policy, approvals=approvals)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_FederatedServicer_to_server(
            FederatedServicer(participant, caller=lambda _ctx: COORDINATOR), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        node = Node(department, runtime, policy, participant, server, port)
        self.nodes[department] = node
        self.coordinator.channels[department] = grpc.insecure_channel(f"127.0.0.1:{port}")
        return node

    def fab(self, app: Path) -> Path:
        path = self.tmp / f"{app.name}.fab"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(build_bundle(app).data)
        return path

    def kill(self, department: str) -> None:
        self.nodes[department].server.stop(0)

    def close(self) -> None:
        for node in self.nodes.values():
            node.server.stop(0)
        for channel in self.coordinator.channels.values():
            channel.close()
