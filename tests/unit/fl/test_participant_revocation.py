"""Revoking an agreement (or an app approval) ends a federated job at the participant at once."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode

from node.errors import AccessDenied
from node.fl import wire
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle
from node.fl.errors import UnknownJobError
from node.fl.participant import Participant
from tests.unit.fl.fl_fakes import (
    APP,
    COORDINATOR,
    FakeAudit,
    FakeConfig,
    FakePolicy,
    FakeRuntime,
    agreement_id,
    seed_table,
    task,
)


@pytest.fixture(scope="module")
def fab() -> bytes:
    return build_bundle(APP).data


class RevokedAfter(FakePolicy):
    """Revokes the agreement once ``passes`` rechecks have passed (e.g. while the app runs)."""

    def __init__(self, audit: FakeAudit, table: pa.Table, passes: int | None = None) -> None:
        super().__init__(audit, table)
        self.passes = passes

    def recheck(self, agreement_id: str) -> None:
        if self.passes is not None:
            if self.passes == 0:
                self.revoked = True
            self.passes -= 1
        super().recheck(agreement_id)


class Node:
    def __init__(self, tmp: Path, fab: bytes) -> None:
        self.runtime = FakeRuntime(FakeConfig(tmp / "traffic", "traffic"))
        self.approvals = ApprovalStore.for_data_dir(self.runtime.config.data_dir)
        path = tmp / "app.fab"
        path.write_bytes(fab)
        self.approvals.approve(str(path))
        self.policy = RevokedAfter(self.runtime.audit, seed_table("traffic"))
        self.participant = Participant(self.runtime, policy=self.policy, approvals=self.approvals)
        self.copy = self.runtime.config.data_dir / "fl" / "jobs" / "job-1" / "data.parquet"
        self.sha256 = hashlib.sha256(fab).hexdigest()
        self.participant.start_job(COORDINATOR, _spec(fab), fab)
        assert self.copy.exists()

    def assert_ended(self, reason: str) -> None:
        assert self.participant.job_ids == []
        assert not self.copy.parent.exists()
        (ended,) = self.runtime.audit.events("fl.ended")
        assert ended["outcome"] == "error"
        assert reason in str(ended["detail"]["reason"])
        assert self.runtime.audit.events("access.denied")[-1]["outcome"] == "denied"
        with pytest.raises(UnknownJobError):
            self.participant.deliver(COORDINATOR, "job-1", _train())


def _spec(fab: bytes, **kw: Any) -> wire.JobSpec:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "run_id": 42,
        "node_id": 77,
        "fab_sha256": hashlib.sha256(fab).hexdigest(),
        "fab_size": len(fab),
        "agreement": agreement_id("traffic"),
        "dataset": "incidents",
        "run_config": {
            "local-epochs": 5,
            "learning-rate": 0.5,
            "label-column": "incident",
            "split-column": "split",
            "secure-aggregation": False,
        },
    }
    fields.update(kw)
    return wire.JobSpec(**fields)


def _train() -> Message:
    arrays = ArrayRecord(task.initial_weights(len(task.FEATURES)))
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    message = Message(content, 77, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = message.object_id
    message.metadata.__dict__["_run_id"] = 42
    return message


def test_a_reply_computed_across_a_revocation_is_dropped(tmp_path: Path, fab: bytes) -> None:
    node = Node(tmp_path, fab)
    node.policy.passes = 1  # the gate's check passes; the agreement is revoked as the app runs
    with pytest.raises(AccessDenied, match="was revoked"):
        node.participant.deliver(COORDINATOR, "job-1", _train())
    assert len(node.runtime.audit.events("fl.task")) == 1  # the app did run
    denied = node.runtime.audit.events("access.denied")[-1]
    assert denied["detail"]["message_type"] == "train"
    node.assert_ended("a reply was dropped")
    assert node.runtime.audit.events("fl.ended")[0]["detail"]["interrupted"] is True


def test_a_message_after_revocation_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = Node(tmp_path, fab)
    assert not node.participant.deliver(COORDINATOR, "job-1", _train()).has_error()
    node.policy.revoked = True
    reply = node.participant.deliver(COORDINATOR, "job-1", _train())
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "was revoked" in (reply.error.reason or "")
    assert len(node.runtime.audit.events("fl.task")) == 1  # the refused task never ran
    node.assert_ended("a message was refused")


def test_keep_job_after_revocation_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = Node(tmp_path, fab)
    node.participant.keep_job(COORDINATOR, "job-1")
    assert node.participant.job_ids == ["job-1"]
    node.policy.revoked = True
    with pytest.raises(AccessDenied, match="was revoked"):
        node.participant.keep_job(COORDINATOR, "job-1")
    node.assert_ended("the job was kept alive")


def test_keep_job_after_the_approval_is_revoked_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = Node(tmp_path, fab)
    node.approvals.revoke(node.sha256)
    with pytest.raises(AccessDenied, match="is not approved"):
        node.participant.keep_job(COORDINATOR, "job-1")
    node.assert_ended("is not approved")


def test_an_end_after_revocation_finds_no_job(tmp_path: Path, fab: bytes) -> None:
    node = Node(tmp_path, fab)
    node.policy.revoked = True
    with pytest.raises(AccessDenied):
        node.participant.keep_job(COORDINATOR, "job-1")
    with pytest.raises(UnknownJobError):
        node.participant.end_job(COORDINATOR, "job-1", "ok")
    assert len(node.runtime.audit.events("fl.ended")) == 1
