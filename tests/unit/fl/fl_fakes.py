"""Fakes for the federated-learning unit tests, with the real interfaces' shapes.

``FakeRuntime`` has the ``FlRuntime`` shape (config, audit, peer_channel);
``FakePolicy`` implements ``DataPolicy`` over in-memory tables; ``LocalNode``
is one participant called directly (no server), with the sample app's FAB
approved; ``Cluster`` runs one real gRPC server per participant on loopback
(without TLS: the caller's department is fixed by the test instead of read
from a certificate). ``job_spec`` and ``train_message`` build what a
coordinator sends such a participant.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from node.config import FlSettings
from node.errors import AccessDenied
from node.fl import wire
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle
from node.fl.errors import UnknownJobError
from node.fl.participant import RECHECK_INTERVAL, Participant
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
#: The run, node and job ids of the jobs ``job_spec`` describes.
RUN_ID = 42
NODE_ID = 77
JOB_ID = "job-1"


def seed_table(department: str) -> pa.Table:
    """The committed seed ``road_safety`` table of a test department."""
    return pq.read_table(SEEDS / SEED_OF[department] / "road_safety.parquet")


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait until ``condition`` holds; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def job_spec(fab: bytes, *, epochs: int = 5, **fields: Any) -> wire.JobSpec:
    """A job of the sample app at department ``traffic``; ``fields`` override the spec's.

    The run config's ``secure-aggregation`` follows ``secagg``, as the coordinator sets it.
    """
    values: dict[str, Any] = {
        "job_id": JOB_ID,
        "run_id": RUN_ID,
        "node_id": NODE_ID,
        "fab_sha256": hashlib.sha256(fab).hexdigest(),
        "fab_size": len(fab),
        "agreement": agreement_id("traffic"),
        "dataset": "incidents",
        "run_config": {
            "local-epochs": epochs,
            "learning-rate": 0.5,
            "label-column": "incident",
            "split-column": "split",
            "secure-aggregation": bool(fields.get("secagg", False)),
        },
    }
    values.update(fields)
    return wire.JobSpec(**values)


def train_message(node_id: int = NODE_ID, run_id: int = RUN_ID) -> Message:
    """Round 1's train instruction with the app's initial weights, as a ServerApp sends it."""
    arrays = ArrayRecord(task.initial_weights(len(task.FEATURES)))
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    message = Message(content, node_id, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = message.object_id
    message.metadata.__dict__["_run_id"] = run_id
    return message


@dataclass
class FakeConfig:
    home: Path
    department: str
    #: node.toml's [fl], as a NodeConfig carries it.
    fl: FlSettings = field(default_factory=FlSettings)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


@dataclass
class FakeAudit:
    entries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Event name -> called (on the recording thread) once such an entry is recorded.
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)

    def record(self, event: str, **fields: Any) -> int:
        with self.lock:
            self.entries.append({"event": event, **fields})
            seq = len(self.entries)
        hook = self.hooks.get(event)
        if hook is not None:
            hook()
        return seq

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
    """Grants ``federated`` on one table to one coordinator, until revoked.

    ``passes`` set to a number revokes the agreement once that many more
    rechecks have passed (e.g. 1: the gate's passes, the one after the app fails).
    """

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
        self.passes: int | None = None

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
        if self.passes is not None:
            if self.passes == 0:
                self.revoked = True
            self.passes -= 1
        if self.revoked:
            raise AccessDenied(f"agreement {agreement_id} was revoked")


class LocalNode:
    """Department ``traffic`` as a participant called directly, the sample app approved.

    ``copy`` is where a job of ``job_spec`` keeps its private data copy.
    """

    def __init__(
        self,
        tmp: Path,
        fab: bytes,
        *,
        settings: FlSettings | None = None,
        dataset: str = "incidents",
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self.runtime = FakeRuntime(FakeConfig(tmp / "traffic", "traffic", settings or FlSettings()))
        self.approvals = ApprovalStore.for_data_dir(self.runtime.config.data_dir)
        path = tmp / "app.fab"
        path.write_bytes(fab)
        self.approvals.approve(str(path))
        self.sha256 = hashlib.sha256(fab).hexdigest()
        self.policy = FakePolicy(self.runtime.audit, seed_table("traffic"), dataset=dataset)
        self.participant = Participant(
            self.runtime,
            policy=self.policy,
            approvals=self.approvals,
            recheck_interval=recheck_interval,
        )
        self.copy = self.runtime.config.data_dir / "fl" / "jobs" / JOB_ID / "data.parquet"
        LocalNode.opened.append(self)

    #: Every LocalNode made, for :func:`end_jobs` after each test.
    opened: ClassVar[list[LocalNode]] = []


def end_jobs(participant: Participant) -> None:
    """End the jobs a test left running, so no check of theirs outlives the test."""
    for job_id in participant.job_ids:
        with contextlib.suppress(UnknownJobError):
            participant.end_job(COORDINATOR, job_id, "error", "the test ended")


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
            end_jobs(node.participant)
        for channel in self.coordinator.channels.values():
            channel.close()
