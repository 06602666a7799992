"""Publishing checkpoints: sign, then gather cosignatures from the federation's witnesses.

A checkpoint counts as published once ``directory.witness_threshold``
witnesses (other departments with the witness role) have cosigned it. Each
witness is sent the checkpoint with a consistency proof from the size it last
cosigned; this node learns that size from the cosignatures it already holds,
and, if the witness disagrees (ABORTED with its size in trailing metadata),
retries once from the witness's size. Every cosignature is verified with the
witness's key from the directory before it is stored.

A witness that cannot be reached, or refuses for a reason of its own, is a
*failure*: the next round may succeed. A witness that refuses because the
checkpoint is inconsistent with the history it already cosigned (it answers
FAILED_PRECONDITION, or holds a size larger than this log now has) is an
*incident*: this log, or the witness's view of it, forked or was rolled back.
An incident is reported as such even when the other witnesses meet the
threshold, because a published checkpoint does not make a fork go away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from ledger.checkpoint import cosignatures, log_name, parse_note, verify_cosignature
from ledger.errors import CheckpointError, LedgerError
from ledger.store import StoredCheckpoint
from node.audit.convert import Submission, cosignature_from_proto, submission_to_proto
from node.audit.recorder import AuditRecorder
from node.audit.service import WITNESS_SIZE_KEY
from node.errors import NodeError
from node.identity.keys import ed25519_public_from_bytes
from node.runtime import NodeRuntime
from protocols.fednode.v1 import ledger_pb2_grpc

__all__ = ["PublishResult", "WitnessIncidentError", "publish_checkpoint"]

log = logging.getLogger("fednode.audit")

_DEADLINE_S = 10.0


class WitnessIncidentError(NodeError):
    """A witness refused a checkpoint as inconsistent with the history it cosigned."""


@dataclass
class PublishResult:
    """The outcome of one publication round."""

    size: int
    root: bytes
    note: bytes
    threshold: int
    cosigners: list[str] = field(default_factory=list)
    #: Every witness that gave no cosignature, with the reason (incidents included).
    failures: dict[str, str] = field(default_factory=dict)
    #: The witnesses among ``failures`` that refused for inconsistency.
    incidents: dict[str, str] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        return len(self.cosigners) >= self.threshold


def _last_cosigned(recorder: AuditRecorder, name: str, key: Any) -> int:
    for cp in reversed(recorder.store.checkpoints()):
        try:
            if name in cosignatures(parse_note(cp.note), {name: key}):
                return cp.size
        except CheckpointError:
            continue
    return 0


def _submit(
    runtime: NodeRuntime, recorder: AuditRecorder, witness: str, cp: StoredCheckpoint
) -> tuple[str, Any]:
    directory = runtime.directory
    name = log_name(recorder.federation, witness)
    key = ed25519_public_from_bytes(directory.get(witness).ed25519_public)
    old = _last_cosigned(recorder, name, key)
    stub = ledger_pb2_grpc.LedgerStub(runtime.peer_channel(witness))
    for _attempt in range(2):
        proof = recorder.store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
        try:
            reply = stub.AddCheckpoint(
                submission_to_proto(Submission(old, proof, cp.note)), timeout=_DEADLINE_S
            )
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise WitnessIncidentError(
                    f"witness {witness} refused size {cp.size} as inconsistent with the "
                    f"history it cosigned: {e.details()}"
                ) from e
            if code == grpc.StatusCode.ABORTED:
                sizes = [v for k, v in (e.trailing_metadata() or ()) if k == WITNESS_SIZE_KEY]
                if sizes and sizes[0].isdigit():
                    held = int(sizes[0])
                    if held > cp.size:
                        raise WitnessIncidentError(
                            f"witness {witness} already cosigned size {held}, larger than "
                            f"this log's {cp.size}: entries were lost or rolled back"
                        ) from e
                    old = held
                    continue
            raise NodeError(f"witness {witness}: {code.name}: {e.details()}") from e
        line = cosignature_from_proto(reply)
        if line.name != name:
            raise NodeError(f"witness {witness} cosigned under the name {line.name!r}")
        verify_cosignature(parse_note(cp.note).text, line, key)
        return witness, line
    raise NodeError(f"witness {witness} keeps reporting a different size")


def publish_checkpoint(
    runtime: NodeRuntime,
    recorder: AuditRecorder,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> PublishResult:
    """Sign a checkpoint of the whole ledger and collect witness cosignatures.

    Raises:
        StorageError: signing was refused (see :meth:`LedgerStore.sign_checkpoint`).
    """
    with recorder.publish_lock:
        return _publish(runtime, recorder, progress)


def _publish(
    runtime: NodeRuntime,
    recorder: AuditRecorder,
    progress: Callable[[dict[str, Any]], None] | None,
) -> PublishResult:
    cp = recorder.store.sign_checkpoint(recorder.origin, recorder.signing_key)
    directory = runtime.directory
    witnesses = sorted(
        e.department for e in directory.witnesses if e.department != runtime.department
    )
    result = PublishResult(
        size=cp.size, root=cp.root, note=cp.note, threshold=directory.witness_threshold
    )
    if progress is not None:
        progress({"event": "signed", "size": cp.size, "witnesses": witnesses})
    lines = []
    if witnesses:
        with ThreadPoolExecutor(max_workers=min(8, len(witnesses))) as pool:
            futures = {w: pool.submit(_submit, runtime, recorder, w, cp) for w in witnesses}
            for witness, future in futures.items():
                try:
                    _, line = future.result()
                except (NodeError, LedgerError) as e:
                    incident = isinstance(e, WitnessIncidentError)
                    if incident:
                        log.warning("witness incident: %s", e)
                        result.incidents[witness] = str(e)
                    else:
                        log.warning("no cosignature from %s: %s", witness, e)
                    result.failures[witness] = str(e)
                    if progress is not None:
                        progress(
                            {
                                "event": "witness_failed",
                                "witness": witness,
                                "reason": str(e),
                                "incident": incident,
                            }
                        )
                    continue
                lines.append(line)
                result.cosigners.append(witness)
                if progress is not None:
                    progress({"event": "cosigned", "witness": witness})
    stored = recorder.store.add_cosignatures(cp.size, lines)
    result.note = stored.note
    recorder.record(
        "ledger.checkpoint",
        outcome="ok" if result.published and not result.incidents else "error",
        detail={
            "size": cp.size,
            "cosigners": result.cosigners,
            "threshold": result.threshold,
            "published": result.published,
            "failures": result.failures,
            "incidents": result.incidents,
        },
    )
    return result
