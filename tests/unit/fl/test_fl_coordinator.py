"""The coordinator end to end over real gRPC on loopback: jobs, results, ledger, faults."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message

from node.fl.coordinator import JobStatusStore, run_job
from node.fl.grid import GrpcSender
from node.fl.jobfile import parse_job
from tests.unit.fl.fl_fakes import APP, Cluster, agreement_id, seed_table, task


def _job(tmp: Path, app: Path, departments: list[str], **extra: Any) -> Any:
    doc: dict[str, Any] = {
        "job": {"app": str(app), "output": str(tmp / "out"), "rounds": extra.pop("rounds", 3)},
        "participants": [
            {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
            for d in departments
        ],
    }
    for key, value in extra.items():
        if key in ("secagg", "timeouts"):
            doc["job"][key] = value
        else:
            doc[key] = value
    return parse_job(doc, tmp)


def test_fedavg_job_writes_results_and_beats_every_local_model(
    cluster: Cluster, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    job = _job(tmp_path, APP, list(cluster.nodes), rounds=10, strategy={"min-nodes": 3})
    summary = run_job(cluster.coordinator, job, events.append)

    assert summary["outcome"] == "ok"
    assert summary["rounds"] == 10
    out = tmp_path / "out"
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["type"] for r in rounds[:2]] == ["train", "evaluate"]
    assert all(sorted(r["ok"]) == ["health", "security", "traffic"] for r in rounds)
    model = np.load(out / "model.npz")
    weights = [model[k] for k in sorted(model.files)]

    splits = [task.split_table(seed_table(d)) for d in cluster.nodes]
    x = np.vstack([s.x_test for s in splits])
    y = np.concatenate([s.y_test for s in splits])
    federated = task.accuracy(weights, x, y)
    local = [
        task.accuracy(task.train(task.initial_weights(11), s.x_train, s.y_train, 2000, 1.0), x, y)
        for s in splits
    ]
    print(f"\nheld-out accuracy: federated {federated:.3f}, local {[round(a, 3) for a in local]}")
    assert federated > max(local) + 0.01
    assert summary["final_metrics"]["evaluate"]["eval-acc"] == pytest.approx(federated, abs=1e-9)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job.started" and kinds[-1] == "job.finished" and "phase" in kinds
    for node in cluster.nodes.values():
        tasks = node.runtime.audit.events("fl.task")
        replies = node.runtime.audit.events("fl.reply")
        assert len(tasks) == len(replies) == 20
        assert tasks[0]["columns"] == seed_table(node.department).column_names
        assert replies[0]["digest"].startswith("sha256:")
        assert node.participant.job_ids == []  # EndJob dropped the Context and data copy
    assert [e["detail"]["phase"] for e in cluster.coordinator.audit.events("fl.job")] == [
        "start",
        "end",
    ]
    statuses = JobStatusStore(cluster.coordinator.config.data_dir).read_all(os.getpid())
    assert statuses[0]["state"] == "finished"


class SlowFirstRound:
    """Delivers each department's first message ``delay`` seconds late: a ServerApp
    busy for longer than the job's idle limit, sending nothing meanwhile."""

    def __init__(self, cluster: Cluster, job_id: str, delay: float) -> None:
        self.inner = GrpcSender(cluster.coordinator.peer_channel, job_id)
        self.delay, self.seen = delay, set[str]()

    def __call__(self, department: str, message: Message, timeout: float) -> Message:
        if department not in self.seen:
            self.seen.add(department)
            time.sleep(self.delay)  # the simulated busy coordinator, not a wait for anything
        return self.inner(department, message, timeout)


def test_a_coordinator_busy_past_the_idle_limit_keeps_its_job_alive(
    cluster: Cluster, tmp_path: Path
) -> None:
    idle = 0.4
    job = _job(tmp_path, APP, list(cluster.nodes), rounds=1, timeouts={"idle": idle})
    summary = run_job(
        cluster.coordinator,
        job,
        lambda _e: None,
        sender_factory=lambda jid: SlowFirstRound(cluster, jid, 3 * idle),
    )
    assert summary["outcome"] == "ok", summary["error"]
    for node in cluster.nodes.values():
        [ended] = node.runtime.audit.events("fl.ended")
        assert ended["outcome"] == "ok" and "reason" not in ended["detail"]
