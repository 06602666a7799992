"""SecAgg+ through NodeGrid: the coordinator sees only masked vectors, and their sum is FedAvg.

Three participants run the legacy-path app (LegacyContext + DefaultWorkflow +
SecAggPlusWorkflow) behind the node's ``secaggplus_mod``. The test records
every message the coordinator's NodeGrid sends and every reply it receives,
recomputes each participant's true (unmasked) update from the broadcast model
and the participant's own data, and checks that no reply carries it, raw or
quantized, while the next broadcast model equals plain FedAvg of the updates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.quantization import quantize
from flwr.compat.common.recorddict_compat import recorddict_to_fitins

from node.fl.coordinator import run_job
from node.fl.grid import GrpcSender
from node.fl.jobfile import parse_job
from tests.unit.fl.fl_fakes import APP, Cluster, seed_table, task

EPOCHS, LR, CLIP, QRANGE = 50, 1.0, 16.0, 4194304


class Recording:
    """A Sender that records every (instruction, reply) pair the NodeGrid handles."""

    def __init__(self, inner: GrpcSender) -> None:
        self.inner = inner
        self.pairs: list[tuple[str, Message, Message]] = []

    def __call__(self, department: str, message: Message, timeout: float) -> Message:
        reply = self.inner(department, message, timeout)
        self.pairs.append((department, message, reply))
        return reply


def _vectors(reply: Message) -> list[np.ndarray]:
    """Every array a reply carries: ArrayRecords and ndarray-encoded config bytes."""
    out: list[np.ndarray] = []
    if not reply.has_content():
        return out
    for record in reply.content.array_records.values():
        for array in record.values():
            try:
                out.append(bytes_to_ndarray(array.data))
            except (ValueError, OSError):
                out.append(np.frombuffer(array.data, dtype=np.uint8))
    for record in reply.content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bytes):
                    try:
                        out.append(bytes_to_ndarray(item))
                    except (ValueError, OSError):
                        continue
    return out


def _leaks(update: list[np.ndarray], vectors: list[np.ndarray]) -> bool:
    """Whether any vector equals the update, raw or as SecAgg+ would quantize it."""
    flat = np.concatenate([u.ravel() for u in update])
    forms = [flat, np.concatenate([q.ravel() for q in quantize(update, CLIP, QRANGE)])]
    for vector in vectors:
        v = vector.ravel()
        for form in forms:
            if v.size == form.size and np.allclose(v.astype(float), form.astype(float), atol=1e-6):
                return True
        # An update split across several arrays: check each part.
        for part in update:
            if v.size == part.size and part.size > 1 and np.allclose(v.astype(float), part.ravel()):
                return True
    return False


def test_leak_detector_finds_an_unmasked_update() -> None:
    update = [np.array([0.5, -1.25, 2.0]), np.array([0.1])]
    assert _leaks(update, [np.concatenate(update)])
    assert _leaks(update, [update[0]])
    assert not _leaks(update, [np.array([7.0, 1.0, 3.0, 2.0])])


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
                {"department": d, "dataset": "incidents", "agreement": f"agr-{d}"}
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
    pairs = senders[0].pairs
    splits = {d: task.split_table(seed_table(d)) for d in departments}

    collect = [
        (d, m, r)
        for d, m, r in pairs
        if "fitins.parameters" in m.content.array_records and not r.has_error()
    ]
    rounds = sorted({m.metadata.group_id for _, m, _ in collect})
    assert rounds == ["1", "2"] and len(collect) == 6

    all_vectors = [v for _, _, r in pairs for v in _vectors(r)]
    assert all_vectors, "the coordinator received masked vectors"
    for round_id in rounds:
        updates: dict[str, list[np.ndarray]] = {}
        for department, message, _ in collect:
            if message.metadata.group_id != round_id:
                continue
            fitins = recorddict_to_fitins(message.content, keep_input=True)
            start = parameters_to_ndarrays(fitins.parameters)
            s = splits[department]
            updates[department] = task.train(start, s.x_train, s.y_train, EPOCHS, LR)
        for department, update in updates.items():
            assert not _leaks(update, all_vectors), f"{department}'s round {round_id} update leaked"
        # Plain FedAvg of the true updates, weighted by training rows.
        sizes = {d: len(splits[d].y_train) for d in updates}
        total = sum(sizes.values())
        fedavg = [sum(sizes[d] * updates[d][k] for d in updates) / total for k in range(2)]
        # The model the ServerApp broadcasts next (evaluation of this round) is the SecAgg+ sum.
        evaluate = next(
            m
            for _, m, _ in pairs
            if m.metadata.group_id == round_id
            and "evaluateins.parameters" in m.content.array_records
        )
        params = evaluate.content.array_records["evaluateins.parameters"]
        aggregated = [bytes_to_ndarray(a.data) for a in params.values()]
        for got, want in zip(aggregated, fedavg, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-3)

    for node in cluster.nodes.values():
        details = [e["detail"] for e in node.runtime.audit.events("fl.task")]
        assert details and all(d["secagg"] is True for d in details)


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
            },
            "run-config": {"min-nodes": 2},
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": f"agr-{d}"}
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
