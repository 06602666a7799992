"""Node failures mid-job: the round completes if strategy minimums hold, else a clear error."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from node.admin.cancel import CommandCancelledError, cancellable
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle
from node.fl.coordinator import JobStatusStore, run_job
from node.fl.errors import NodesUnavailableError
from node.fl.grid import GrpcSender
from node.fl.jobfile import parse_job
from tests.unit.fl.fl_fakes import APP, Cluster, agreement_id


def _job(
    tmp: Path, app: Path, cluster: Cluster, *, rounds: int, min_nodes: int, secagg: bool = False
) -> Any:
    return parse_job(
        {
            "job": {
                "app": str(app),
                "output": str(tmp / "out"),
                "rounds": rounds,
                "secagg": secagg,
                "timeouts": {"node-wait": 2, "message": 10},
            },
            "strategy": {"min-nodes": min_nodes},
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
                for d in cluster.nodes
            ],
        },
        tmp,
    )


class KillOnCall:
    """Delivers normally, but kills ``victim``'s server just before its ``nth`` message."""

    def __init__(self, cluster: Cluster, job_id: str, victim: str, nth: int) -> None:
        self.inner = GrpcSender(cluster.coordinator.peer_channel, job_id)
        self.cluster, self.victim, self.nth, self.calls = cluster, victim, nth, 0

    def __call__(self, department: str, message: Message, timeout: float) -> Message:
        if department == self.victim:
            self.calls += 1
            if self.calls == self.nth:
                self.cluster.kill(self.victim)
        return self.inner(department, message, timeout)


def _phases(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "phase"]


def test_round_completes_without_a_killed_node_when_minimums_hold(
    cluster: Cluster, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    summary = run_job(
        cluster.coordinator,
        _job(tmp_path, APP, cluster, rounds=3, min_nodes=2),
        events.append,
        sender_factory=lambda jid: KillOnCall(cluster, jid, "health", 3),
    )
    assert summary["outcome"] == "ok"
    assert summary["rounds"] == 3
    round2 = next(p for p in _phases(events) if p["round"] == 2 and p["type"] == "train")
    assert round2["ok"] == ["security", "traffic"]
    assert "health" in round2["failed"]
    # The survivors' ledgers hold every task and reply; the coordinator's records the end.
    for name in ("traffic", "security"):
        assert len(cluster.nodes[name].runtime.audit.events("fl.reply")) == 6
    end = cluster.coordinator.audit.events("fl.job")[-1]
    assert end["outcome"] == "ok" and end["detail"]["joined"] == ["health", "security", "traffic"]


def test_job_fails_clearly_when_minimums_cannot_be_met(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(NodesUnavailableError, match=r"only 2 of 3 participants remain.*health"):
        run_job(
            cluster.coordinator,
            _job(tmp_path, APP, cluster, rounds=3, min_nodes=3),
            lambda _e: None,
            sender_factory=lambda jid: KillOnCall(cluster, jid, "health", 2),
        )
    assert time.monotonic() - started < 30
    end = cluster.coordinator.audit.events("fl.job")[-1]
    assert end["outcome"] == "error" and "only 2 of 3" in end["detail"]["reason"]
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"outcome": "error"' in summary


def test_a_participant_refusing_at_start_fails_the_job_when_minimums_cannot_be_met(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The refused node never joins; a strategy that needs it fails after node-wait."""
    fab = build_bundle(APP)
    ApprovalStore.for_data_dir(cluster.nodes["health"].runtime.config.data_dir).revoke(fab.sha256)
    started = time.monotonic()
    with pytest.raises(NodesUnavailableError, match=r"only 2 of 3 .*health \(refused the job"):
        run_job(
            cluster.coordinator,
            _job(tmp_path, APP, cluster, rounds=2, min_nodes=3),
            lambda _e: None,
        )
    assert time.monotonic() - started < 30


# Flower's client-manager thread polls the Grid and dies on the error; that is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_legacy_workflow_waiting_for_lost_nodes_fails_clearly(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Flower's legacy client manager would wait a day; the Grid ends the job instead."""
    with pytest.raises(NodesUnavailableError, match="only 2 of 3"):
        run_job(
            cluster.coordinator,
            _job(tmp_path, APP, cluster, rounds=2, min_nodes=3, secagg=True),
            lambda _e: None,
            # Lost after its key shares went out (the masked-vector stage): SecAgg+
            # finishes round 1 without it, and round 2 waits for three nodes.
            sender_factory=lambda jid: KillOnCall(cluster, jid, "health", 3),
        )
    # The survivors record why the job ended, in the coordinator's words.
    for department in ("traffic", "security"):
        [end] = cluster.nodes[department].runtime.audit.events("fl.ended")
        assert end["outcome"] == "error" and "only 2 of 3" in end["detail"]["reason"]


def test_a_job_whose_launcher_went_away_stops_and_is_recorded_as_failed(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Ctrl-C in 'fl launch' ends the admin call; the job stops instead of running on."""
    earlier = set(threading.enumerate())  # other tests' blocked legacy ServerApps
    ended = threading.Event()

    def emit(event: dict[str, Any]) -> None:
        # The operator goes away once the job is under way (a round done), however
        # long starting took on a loaded machine.
        if event["event"] == "phase":
            ended.set()

    started = time.monotonic()
    with cancellable(ended), pytest.raises(CommandCancelledError):
        run_job(cluster.coordinator, _job(tmp_path, APP, cluster, rounds=50, min_nodes=3), emit)
    assert time.monotonic() - started < 30
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outcome"] == "error" and "cancelled" in summary["error"]
    assert 1 <= summary["rounds"] < 50
    [status] = JobStatusStore(cluster.coordinator.config.data_dir).read_all(os.getpid())
    assert status["state"] == "failed"
    # Every participant was told at once and recorded the end.
    for node in cluster.nodes.values():
        assert node.participant.job_ids == []
        [end] = node.runtime.audit.events("fl.ended")
        assert end["outcome"] == "error" and end["detail"]["job_id"] == summary["job_id"]
        assert end["detail"]["reason"] == summary["error"] and "cancelled" in summary["error"]
    # The closed Grid stops the ServerApp too: nothing of the job runs on.
    deadline = time.monotonic() + 20
    while any(t.name == "serverapp" and t not in earlier for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the ServerApp still runs after the job ended"
        time.sleep(0.1)


def test_a_job_left_running_by_an_earlier_node_process_reads_as_interrupted(
    tmp_path: Path,
) -> None:
    store = JobStatusStore(tmp_path)
    store.write({"job_id": "old", "state": "running", "started_at": 1, "node_pid": -1})
    store.write({"job_id": "mine", "state": "running", "started_at": 2, "node_pid": os.getpid()})
    store.write({"job_id": "done", "state": "finished", "started_at": 3, "node_pid": -1})
    # Read by the CLI (another process) while this "node" serves: only the old job is stale,
    # and the CLI does not rewrite the node's files.
    cli_view = {s["job_id"]: s["state"] for s in store.read_all(serving_pid=os.getpid() + 1)}
    assert cli_view == {"old": "interrupted", "mine": "interrupted", "done": "finished"}
    node_view = {s["job_id"]: s["state"] for s in store.read_all(serving_pid=os.getpid())}
    assert node_view == {"old": "interrupted", "mine": "running", "done": "finished"}
    # The node stored its finding; a later read by anyone agrees, with the reason.
    (old,) = [s for s in store.read_all(serving_pid=None) if s["job_id"] == "old"]
    assert old["state"] == "interrupted" and "stopped during the job" in old["error"]
    (mine,) = [s for s in store.read_all(serving_pid=os.getpid()) if s["job_id"] == "mine"]
    assert mine["state"] == "running"
