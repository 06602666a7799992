"""SecAgg+ through NodeGrid: the coordinator sees only masked vectors, and their sum is FedAvg.

Three participants run the legacy-path app (LegacyContext + DefaultWorkflow +
SecAggPlusWorkflow) behind the node's ``secaggplus_mod``. The test records
every message the coordinator's NodeGrid sends and every reply it receives,
recomputes each participant's true (unmasked) update from the broadcast model
and the participant's own data, and checks that no reply carries it, raw or
quantized, while the next broadcast model equals plain FedAvg of the updates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message

from node.fl.coordinator import run_job
from node.fl.errors import JobFailedError
from node.fl.grid import GrpcSender
from node.fl.jobfile import parse_job
from tests.unit.fl.fl_fakes import APP, Cluster, agreement_id, seed_table, task
from tests.unit.fl.secagg_check import Recording, check_secagg_run, leaks
from tests.unit.fl.test_fl_faults import KillOnCall, _job


def test_leak_detector_finds_an_unmasked_update() -> None:
    update = [np.array([0.5, -1.25, 2.0]), np.array([0.1])]
    assert leaks(update, [np.concatenate(update)])
    assert leaks(update, [update[0]])
    assert not leaks(update, [np.array([7.0, 1.0, 3.0, 2.0])])


def test_secaggplus_hides_updates_and_matches_fedavg(cluster: Cluster, tmp_path: Path) -> None:
    departments = list(cluster.nodes)
    job = parse_job(
        {
            "job": {
                "app": str(APP),
                "output": str(tmp_path / "out"),
                "rounds": 2,
                "secagg": True,
            },
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
                for d in departments
            ],
        },
        tmp_path,
    )
    senders: list[Recording] = []

    def factory(job_id: str) -> Recording:
        senders.append(Recording(GrpcSender(cluster.coordinator.peer_channel, job_id)))
        return senders[0]

    summary = run_job(cluster.coordinator, job, lambda _e: None, sender_factory=factory)
    assert summary["outcome"] == "ok", summary["error"]
    splits = {d: task.split_table(seed_table(d)) for d in departments}
    check_secagg_run(senders[0].pairs, splits, rounds=2)
    for node in cluster.nodes.values():
        details = [e["detail"] for e in node.runtime.audit.events("fl.task")]
        assert details and all(d["secagg"] is True for d in details)
        # Each training round is four SecAgg+ messages; the ledger tells them apart.
        stages = [d.get("secagg_stage") for d in details if d["message_type"] == "train"]
        assert stages == ["setup", "share_keys", "collect_masked_vectors", "unmask"] * 2


@pytest.mark.parametrize("dropped", ["health"])
def test_secaggplus_survives_one_dropout_above_threshold(
    cluster: Cluster, tmp_path: Path, dropped: str
) -> None:
    """Threshold 2 of 3: a node lost after sharing its keys is unmasked by the other two."""
    departments = list(cluster.nodes)
    job = parse_job(
        {
            "job": {
                "app": str(APP),
                "output": str(tmp_path / "out"),
                "rounds": 1,
                "secagg": True,
                # Flower's legacy client manager polls the Grid all run long; on a slow
                # machine the server's unmasking alone may outlast the default 10 s.
                "timeouts": {"node-wait": 60},
            },
            "run-config": {"min-nodes": 2},
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
                for d in departments
            ],
        },
        tmp_path,
    )
    calls: dict[str, int] = {}

    class DropAfterSetup(Recording):
        def __call__(self, department: str, message: Message, timeout: float) -> Any:
            calls[department] = calls.get(department, 0) + 1
            if department == dropped and calls[department] > 2:
                cluster.kill(dropped)
            return super().__call__(department, message, timeout)

    summary = run_job(
        cluster.coordinator,
        job,
        lambda _e: None,
        sender_factory=lambda jid: DropAfterSetup(
            GrpcSender(cluster.coordinator.peer_channel, jid)
        ),
    )
    assert summary["outcome"] == "ok", summary["error"]
    assert summary["rounds"] == 1


@pytest.mark.parametrize(("nth", "stage"), [(1, "setup"), (2, "share_keys")])
def test_a_node_lost_during_secagg_setup_fails_the_job_naming_stage_and_node(
    cluster: Cluster, tmp_path: Path, nth: int, stage: str
) -> None:
    """Without its key shares the others cannot unmask the round; Flower alone says KeyError."""
    with pytest.raises(JobFailedError) as raised:
        run_job(
            cluster.coordinator,
            _job(tmp_path, APP, cluster, rounds=2, min_nodes=2, secagg=True),
            lambda _e: None,
            sender_factory=lambda jid: KillOnCall(cluster, jid, "health", nth),
        )
    message = str(raised.value)
    assert message.startswith("SecAgg+ round 1 failed in the unmask stage at ")
    assert f"health dropped out during SecAgg+ setup (health in the {stage} stage: " in message
    assert "KeyError" not in message
    assert raised.value.hint is not None and "check health's node" in raised.value.hint
    assert "min-nodes" in raised.value.hint
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outcome"] == "error" and summary["error"] == message
    end = cluster.coordinator.audit.events("fl.job")[-1]
    assert end["outcome"] == "error" and end["detail"]["reason"] == message[:200]
