"""Checks that a SecAgg+ run hid every update from the coordinator (unit and integration tests).

The check recomputes each participant's true (unmasked) update from the model
the coordinator broadcast and the participant's own training rows, then
asserts that no reply the coordinator's NodeGrid received carries it, raw or
quantized, and that the model broadcast afterwards equals plain FedAvg.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.quantization import quantize
from flwr.compat.common.recorddict_compat import recorddict_to_fitins

from node.fl.grid import GrpcSender
from tests.unit.fl.fl_fakes import task

EPOCHS, LR, CLIP, QRANGE = 50, 1.0, 16.0, 4194304


class Recording:  # a Sender
    """A Sender that records every (instruction, reply) pair the NodeGrid handles."""

    def __init__(self, inner: GrpcSender) -> None:
        self.inner = inner
        self.pairs: list[tuple[str, Message, Message]] = []

    def __call__(self, department: str, message: Message, timeout: float) -> Message:
        reply = self.inner(department, message, timeout)
        self.pairs.append((department, message, reply))
        return reply


def carried_vectors(reply: Message) -> list[np.ndarray]:
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
    for config in reply.content.config_records.values():
        for value in config.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bytes):
                    try:
                        out.append(bytes_to_ndarray(item))
                    except (ValueError, OSError):
                        continue
    return out


def leaks(update: list[np.ndarray], vectors: list[np.ndarray]) -> bool:
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


def check_secagg_run(
    pairs: list[tuple[str, Message, Message]], splits: dict[str, task.Split], rounds: int
) -> None:
    """Assert: no unmasked update reached the coordinator; each aggregate is FedAvg."""
    collect = [
        (d, m, r)
        for d, m, r in pairs
        if "fitins.parameters" in m.content.array_records and not r.has_error()
    ]
    round_ids = sorted({m.metadata.group_id for _, m, _ in collect})
    assert round_ids == [str(i) for i in range(1, rounds + 1)]
    assert len(collect) == rounds * len(splits)
    all_vectors = [v for _, _, r in pairs for v in carried_vectors(r)]
    assert all_vectors, "the coordinator received masked vectors"
    for round_id in round_ids:
        updates: dict[str, list[np.ndarray]] = {}
        for department, message, _ in collect:
            if message.metadata.group_id != round_id:
                continue
            start = parameters_to_ndarrays(recorddict_to_fitins(message.content, True).parameters)
            s = splits[department]
            updates[department] = task.train(start, s.x_train, s.y_train, EPOCHS, LR)
        for department, update in updates.items():
            assert not leaks(update, all_vectors), f"{department}'s round {round_id} update leaked"
        sizes = {d: len(splits[d].y_train) for d in updates}
        total = sum(sizes.values())
        fedavg = [sum(sizes[d] * updates[d][k] for d in updates) / total for k in range(2)]
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
