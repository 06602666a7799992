"""The participant: admission, the policy gate, ledger records, DP, one Context per run."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common.constant import ErrorCode

from node.errors import AccessDenied, FederatedError
from node.fl import wire
from node.fl.approvals import ApprovalStore
from node.fl.coordinator import run_job
from node.fl.errors import AppNotApprovedError, UnknownJobError
from node.fl.jobfile import parse_job
from tests.unit.fl.fl_fakes import (
    APP,
    COORDINATOR,
    Cluster,
    LocalNode,
    agreement_id,
    job_spec,
    seed_table,
    train_message,
)


def test_unapproved_app_is_refused_and_recorded(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    ApprovalStore.for_data_dir(node.runtime.config.data_dir).revoke(hashlib.sha256(fab).hexdigest())
    with pytest.raises(AppNotApprovedError, match="not approved"):
        node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    denied = node.runtime.audit.events("access.denied")
    assert denied and denied[0]["detail"]["fab_sha256"] == hashlib.sha256(fab).hexdigest()
    assert node.participant.job_ids == []


def test_agreement_refusal_stops_admission(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    with pytest.raises(AccessDenied, match="does not grant"):
        node.participant.start_job("someone-else", job_spec(fab), fab)
    assert node.runtime.audit.events("access.denied")[0]["peer"] == "someone-else"


def test_task_and_reply_are_recorded_with_columns_and_digest(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    info = node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    table = seed_table("traffic")
    assert info.rows == table.num_rows and info.columns == tuple(table.column_names)
    # Admission read the treated table: recorded before any task runs.
    (admitted,) = node.runtime.audit.events("fl.admitted")
    assert admitted["peer"] == COORDINATOR and admitted["agreement"] == agreement_id("traffic")
    assert admitted["columns"] == table.column_names
    assert admitted["detail"]["rows"] == table.num_rows and admitted["detail"]["job_id"] == "job-1"
    reply = node.participant.deliver(COORDINATOR, "job-1", train_message())
    assert not reply.has_error()
    (entry,) = node.runtime.audit.events("fl.task")
    assert entry["peer"] == COORDINATOR and entry["agreement"] == agreement_id("traffic")
    assert entry["columns"] == table.column_names
    assert entry["detail"] | {} == entry["detail"]
    assert {k: entry["detail"][k] for k in ("job_id", "round", "message_type", "secagg", "dp")} == {
        "job_id": "job-1",
        "round": 1,
        "message_type": "train",
        "secagg": False,
        "dp": None,
    }
    (done,) = node.runtime.audit.events("fl.reply")
    assert done["digest"] == wire.message_digest(reply) and done["outcome"] == "ok"


@pytest.mark.parametrize("revoke", ["approval", "agreement"])
def test_revocation_stops_a_running_job_at_the_next_message(
    cluster: Cluster, fab: bytes, revoke: str
) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    assert not node.participant.deliver(COORDINATOR, "job-1", train_message()).has_error()
    if revoke == "approval":
        ApprovalStore.for_data_dir(node.runtime.config.data_dir).revoke(
            hashlib.sha256(fab).hexdigest()
        )
    else:
        node.policy.revoked = True
    reply = node.participant.deliver(COORDINATOR, "job-1", train_message())
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert len(node.runtime.audit.events("fl.task")) == 1  # the denied task never ran
    assert node.runtime.audit.events("access.denied")[-1]["outcome"] == "denied"


def test_only_the_starting_coordinator_reaches_the_job(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    with pytest.raises(UnknownJobError):
        node.participant.deliver("security", "job-1", train_message())
    with pytest.raises(UnknownJobError):
        node.participant.end_job("security", "job-1", "ok")
    wrong_node = node.participant.deliver(COORDINATOR, "job-1", train_message(node_id=5))
    assert wrong_node.has_error()


def test_data_copy_is_private_and_removed_at_job_end(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    data = node.runtime.config.data_dir / "fl" / "jobs" / "job-1" / "data.parquet"
    assert data.stat().st_mode & 0o777 == 0o600
    assert data.parent.stat().st_mode & 0o777 == 0o700
    node.participant.end_job(COORDINATOR, "job-1", "ok")
    assert not data.parent.exists()


def test_app_exception_becomes_error_reply_and_is_recorded(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    bad = train_message()
    del bad.content["arrays"]
    reply = node.participant.deliver(COORDINATOR, "job-1", bad)
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert node.runtime.audit.events("fl.reply")[-1]["outcome"] == "error"


def test_dp_clips_and_noises_updates_and_the_ledger_records_its_parameters(
    cluster: Cluster, tmp_path: Path
) -> None:
    dp = {"clipping-norm": 0.5, "sensitivity": 0.5, "epsilon": 8.0, "delta": 1e-5}
    job = parse_job(
        {
            "job": {"app": str(APP), "output": str(tmp_path / "out"), "rounds": 2},
            "strategy": {"min-nodes": 3},
            "dp": dp,
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
                for d in cluster.nodes
            ],
        },
        tmp_path,
    )
    summary = run_job(cluster.coordinator, job, lambda _e: None)
    assert summary["outcome"] == "ok"
    expected = wire.DpConfig(0.5, 0.5, 8.0, 1e-5).to_record()
    assert summary["dp"] == expected
    assert cluster.coordinator.audit.events("fl.job")[0]["detail"]["dp"] == expected
    for node in cluster.nodes.values():
        details = [e["detail"] for e in node.runtime.audit.events("fl.task")]
        assert details and all(d["dp"] == expected for d in details)
    # The first round's update moved at most the clipping norm from zero, plus noise.
    model = np.load(tmp_path / "out" / "model.npz")
    assert np.all(np.isfinite(np.concatenate([model[k].ravel() for k in model.files])))


def test_one_context_lives_for_the_whole_run(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    job = node.participant._job(COORDINATOR, "job-1")
    context = job.context
    context.state.config_records["probe"] = ConfigRecord({"n": 1})
    node.participant.deliver(COORDINATOR, "job-1", train_message())
    assert node.participant._job(COORDINATOR, "job-1").context is context
    assert context.state.config_records["probe"]["n"] == 1
    assert str(context.node_config["data-path"]).endswith("data.parquet")


class _Gate:
    """A job lock that tells when a second message waits on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> None:
        self.waiting.set()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_the_end_of_a_job_is_recorded_and_stops_its_messages(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    job = node.participant._job(COORDINATOR, "job-1")
    # A message queued behind one still running when the end comes never runs.
    job.lock = gate = _Gate()  # type: ignore[assignment]
    gate.acquire()
    queued: list[BaseException] = []

    def deliver() -> None:
        try:
            node.participant.deliver(COORDINATOR, "job-1", train_message())
        except UnknownJobError as e:
            queued.append(e)

    worker = threading.Thread(target=deliver)
    worker.start()
    assert gate.waiting.wait(30), "the message never queued"
    node.participant.end_job(COORDINATOR, "job-1", "error")
    gate.release()
    worker.join(timeout=30)
    assert not worker.is_alive() and "has ended" in str(queued[0])
    assert node.runtime.audit.events("fl.task") == []
    [ended] = node.runtime.audit.events("fl.ended")
    assert ended["outcome"] == "error" and ended["peer"] == COORDINATOR
    assert ended["detail"]["job_id"] == "job-1" and ended["detail"]["interrupted"] is True
    assert node.participant.job_ids == []
    with pytest.raises(UnknownJobError):
        node.participant.end_job(COORDINATOR, "job-1", "error")
    assert len(node.runtime.audit.events("fl.ended")) == 1


def test_a_reply_computed_after_the_job_ended_is_dropped(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    job = node.participant._job(COORDINATOR, "job-1")
    handler = job.handler

    def end_during(message: Any, context: Any) -> Any:
        node.participant.end_job(COORDINATOR, "job-1", "error")
        return handler(message, context)

    job.handler = end_during
    with pytest.raises(UnknownJobError, match="has ended"):
        node.participant.deliver(COORDINATOR, "job-1", train_message())


def test_a_job_id_still_opening_cannot_be_started_again(
    tmp_path: Path, fab: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = LocalNode(tmp_path, fab)
    inside, release = threading.Event(), threading.Event()
    admit = node.policy.admit

    def slow_admit(coordinator: str, agreement: str) -> Any:
        inside.set()
        assert release.wait(10)
        return admit(coordinator, agreement)

    monkeypatch.setattr(node.policy, "admit", slow_admit)
    first = threading.Thread(
        target=node.participant.start_job, args=(COORDINATOR, job_spec(fab), fab)
    )
    first.start()
    assert inside.wait(10), "the first start never reached admission"
    with pytest.raises(FederatedError, match="job-1 already runs"):
        node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    release.set()
    first.join(10)
    assert node.participant.job_ids == ["job-1"]
    assert len(node.runtime.audit.events("fl.admitted")) == 1
