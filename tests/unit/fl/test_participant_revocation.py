"""Revoking an agreement (or an app approval) ends a federated job at the participant at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.constant import ErrorCode

from node.errors import AccessDenied
from node.fl.errors import UnknownJobError
from node.fl.participant import RECHECK_INTERVAL
from tests.unit.fl.fl_fakes import COORDINATOR, JOB_ID, LocalNode, job_spec, train_message, wait_for


def _started(tmp: Path, fab: bytes, recheck_interval: float = RECHECK_INTERVAL) -> LocalNode:
    local = LocalNode(tmp, fab, recheck_interval=recheck_interval)
    local.participant.start_job(COORDINATOR, job_spec(fab), fab)
    assert local.copy.exists()
    return local


def _assert_ended(node: LocalNode, reason: str) -> None:
    """The job ended once, for ``reason``: no job, no data copy, no more messages."""
    assert node.participant.job_ids == []
    assert not node.copy.parent.exists()
    (ended,) = node.runtime.audit.events("fl.ended")
    assert ended["outcome"] == "error"
    assert reason in str(ended["detail"]["reason"])
    assert node.runtime.audit.events("access.denied")[-1]["outcome"] == "denied"
    with pytest.raises(UnknownJobError):
        node.participant.deliver(COORDINATOR, JOB_ID, train_message())


def test_a_reply_computed_across_a_revocation_is_dropped_and_recorded_as_denied(
    tmp_path: Path, fab: bytes
) -> None:
    node = _started(tmp_path, fab)
    node.policy.passes = 1  # the gate's check passes; the agreement is revoked as the app runs
    with pytest.raises(AccessDenied, match="was revoked"):
        node.participant.deliver(COORDINATOR, JOB_ID, train_message())
    events = [e["event"] for e in node.runtime.audit.entries]
    # The app did run, but no reply left: the ledger says so, and why, before the end.
    assert events == ["fl.admitted", "fl.task", "access.denied", "fl.ended"]
    denied = node.runtime.audit.events("access.denied")[-1]
    assert denied["detail"]["reason"].startswith("reply dropped, not sent: agreement")
    assert denied["detail"]["message_type"] == "train" and denied["detail"]["round"] == 1
    assert denied["detail"]["job_id"] == JOB_ID
    _assert_ended(node, "a reply was dropped")
    assert node.runtime.audit.events("fl.ended")[0]["detail"]["interrupted"] is True


def test_a_revocation_found_by_another_call_while_the_app_runs_drops_the_reply(
    tmp_path: Path, fab: bytes
) -> None:
    node = _started(tmp_path, fab)

    def revoke_and_keep() -> None:
        # The coordinator's KeepJob arrives while the message computes and finds it revoked.
        node.policy.revoked = True
        with pytest.raises(AccessDenied):
            node.participant.keep_job(COORDINATOR, JOB_ID)

    node.runtime.audit.hooks["fl.task"] = revoke_and_keep
    with pytest.raises(UnknownJobError, match="has ended"):
        node.participant.deliver(COORDINATOR, JOB_ID, train_message())
    assert node.runtime.audit.events("fl.reply") == []
    _assert_ended(node, "the job was kept alive")
    assert node.runtime.audit.events("fl.ended")[0]["detail"]["interrupted"] is True


def test_a_message_after_revocation_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = _started(tmp_path, fab)
    assert not node.participant.deliver(COORDINATOR, JOB_ID, train_message()).has_error()
    node.policy.revoked = True
    reply = node.participant.deliver(COORDINATOR, JOB_ID, train_message())
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "was revoked" in (reply.error.reason or "")
    assert len(node.runtime.audit.events("fl.task")) == 1  # the refused task never ran
    assert [e["event"] for e in node.runtime.audit.entries][-2:] == ["access.denied", "fl.ended"]
    _assert_ended(node, "a message was refused")


def test_keep_job_after_revocation_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = _started(tmp_path, fab)
    node.participant.keep_job(COORDINATOR, JOB_ID)
    assert node.participant.job_ids == [JOB_ID]
    node.policy.revoked = True
    with pytest.raises(AccessDenied, match="was revoked"):
        node.participant.keep_job(COORDINATOR, JOB_ID)
    _assert_ended(node, "the job was kept alive")


def test_keep_job_after_the_approval_is_revoked_ends_the_job(tmp_path: Path, fab: bytes) -> None:
    node = _started(tmp_path, fab)
    node.approvals.revoke(node.sha256)
    with pytest.raises(AccessDenied, match="is not approved"):
        node.participant.keep_job(COORDINATOR, JOB_ID)
    _assert_ended(node, "is not approved")


def test_an_end_after_revocation_finds_no_job(tmp_path: Path, fab: bytes) -> None:
    node = _started(tmp_path, fab)
    node.policy.revoked = True
    with pytest.raises(AccessDenied):
        node.participant.keep_job(COORDINATOR, JOB_ID)
    with pytest.raises(UnknownJobError):
        node.participant.end_job(COORDINATOR, JOB_ID, "ok")
    assert len(node.runtime.audit.events("fl.ended")) == 1


@pytest.mark.parametrize("revoke", ["agreement", "approval"])
def test_a_revocation_ends_a_job_whose_coordinator_stays_silent(
    tmp_path: Path, fab: bytes, revoke: str
) -> None:
    """A job without an idle limit hears nothing more, yet the node's own check ends it."""
    node = _started(tmp_path, fab, recheck_interval=0.05)
    assert node.participant._job(COORDINATOR, JOB_ID).spec.idle_limit == 0  # no idle timeout
    if revoke == "agreement":
        node.policy.revoked = True
    else:
        node.approvals.revoke(node.sha256)
    wait_for(lambda: not node.copy.exists(), "the revoked job kept its data copy")
    wait_for(lambda: bool(node.runtime.audit.events("fl.ended")), "no fl.ended recorded")
    _assert_ended(node, "the node's periodic check")


def test_the_periodic_check_leaves_a_granted_job_running_and_records_nothing(
    tmp_path: Path, fab: bytes
) -> None:
    node = _started(tmp_path, fab, recheck_interval=0.02)
    checked = node.policy.passes = 10**6  # counts the rechecks down
    wait_for(lambda: checked - (node.policy.passes or 0) >= 5, "the job was never rechecked")
    assert node.participant.job_ids == [JOB_ID] and node.copy.exists()
    assert [e["event"] for e in node.runtime.audit.entries] == ["fl.admitted"]
    node.participant.end_job(COORDINATOR, JOB_ID, "ok")
    # A check already under way may set one more turn, which then finds no job.
    wait_for(lambda: node.participant._rechecks.watched == [], "the ended job is still checked")


def test_a_periodic_check_that_cannot_decide_keeps_checking(
    tmp_path: Path, fab: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreadable approvals file is no revocation, but it must not stop the checks."""
    node = _started(tmp_path, fab, recheck_interval=0.02)
    good = node.approvals.path.read_bytes()
    node.approvals.path.write_bytes(b"not json")
    wait_for(lambda: "periodic check failed" in caplog.text, "the bad file went unnoticed")
    assert node.participant.job_ids == [JOB_ID]
    node.approvals.path.write_bytes(good)
    node.policy.revoked = True
    # The end is recorded last (after the job is gone and its copy deleted): wait for that.
    wait_for(lambda: bool(node.runtime.audit.events("fl.ended")), "the revocation went unseen")
    _assert_ended(node, "the node's periodic check")
