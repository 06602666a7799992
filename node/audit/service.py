"""The Ledger gRPC service: checkpoints, proofs, the caller's own entries, and witnessing.

Access rules (the caller is read only from its verified client certificate):

* any federation member may read the latest checkpoint and ask for proofs;
* entries are served only where the caller is the recorded ``peer``, so a
  department sees what this node recorded about its own calls and nothing else;
* ``AddCheckpoint`` accepts only the caller's own log (origin
  ``fednode/<federation>/<caller>``). A fork or rollback is recorded in this
  node's ledger as ``witness.incident`` before the call fails. When the
  witness state or the ledger cannot be written the call ends with
  ``UNAVAILABLE`` (``DATA_LOSS`` for a damaged file) and a fixed message.

Errors reach the peer as a status code and a short public message; details go
to the local log.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import grpc

from ledger.canonical import loads
from ledger.checkpoint import parse_checkpoint, parse_note
from ledger.errors import (
    CheckpointError,
    LedgerDamageError,
    LedgerError,
    ProofError,
    StorageError,
    WitnessError,
)
from ledger.witness import ForkError, WitnessConflictError
from node.audit.convert import cosignature_to_proto, proof_to_proto, submission_from_proto
from node.audit.recorder import AuditRecorder
from node.errors import NodeError
from node.runtime import NodeRuntime
from node.server.peer import caller_department
from protocols.fednode.v1 import ledger_pb2, ledger_pb2_grpc

__all__ = ["LedgerService", "add_services", "recorder_of"]

log = logging.getLogger("fednode.audit")

_CHUNK_BYTES = 1 << 20
_MAX_RANGE = 100_000
WITNESS_SIZE_KEY = "fednode-witness-size"
#: What a submitting log reads when this witness cannot store or record; the
#: cause (a path, SQLite's text) stays in the local log.
WITNESS_UNAVAILABLE = "witness storage is unavailable; try again later"
WITNESS_DAMAGED = "witness storage is damaged"


def recorder_of(runtime: NodeRuntime) -> AuditRecorder:
    """Return the node's :class:`AuditRecorder`.

    Raises:
        NodeError: the node runs without the audit ledger.
    """
    audit = runtime.audit
    if not isinstance(audit, AuditRecorder):
        raise NodeError("this node runs without the audit ledger subsystem")
    return audit


class LedgerService(ledger_pb2_grpc.LedgerServicer):  # type: ignore[misc]
    """Serves this node's ledger to the federation and witnesses peer logs."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.recorder = recorder_of(runtime)

    def LatestCheckpoint(  # noqa: N802 -- gRPC method name
        self, request: ledger_pb2.CheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.CheckpointResponse:
        latest = self.recorder.store.latest_checkpoint()
        if latest is None:
            return ledger_pb2.CheckpointResponse()
        return ledger_pb2.CheckpointResponse(note=latest.note, size=latest.size)

    def GetEntries(  # noqa: N802 -- gRPC method name
        self, request: ledger_pb2.EntriesRequest, context: grpc.ServicerContext
    ) -> Iterator[ledger_pb2.EntriesChunk]:
        caller = caller_department(context)
        store = self.recorder.store
        end = min(request.end or store.size, store.size, request.start + _MAX_RANGE)
        chunk = ledger_pb2.EntriesChunk()
        used = 0
        for seq, body, _ in store.iter_entries(request.start, end):
            if loads(body).get("peer") != caller:
                continue
            if used + len(body) > _CHUNK_BYTES and used:
                yield chunk
                chunk, used = ledger_pb2.EntriesChunk(), 0
            chunk.entries.append(body)
            chunk.seqs.append(seq)
            used += len(body)
        if used:
            yield chunk

    def GetInclusionProof(  # noqa: N802 -- gRPC method name
        self, request: ledger_pb2.InclusionProofRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ProofResponse:
        store = self.recorder.store
        try:
            proof = store.inclusion_proof(request.seq, request.size)
            leaf = next(leaf for _, _, leaf in store.iter_entries(request.seq, request.seq + 1))
            root = store.root(request.size)
        except (LedgerError, StopIteration) as e:
            log.info("inclusion proof refused: %s", e)
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "no such entry or tree size")
        return proof_to_proto(proof, leaf=leaf, root=root)

    def GetConsistencyProof(  # noqa: N802 -- gRPC method name
        self, request: ledger_pb2.ConsistencyProofRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ProofResponse:
        try:
            proof = self.recorder.store.consistency_proof(request.old_size, request.new_size)
        except (LedgerError, ProofError) as e:
            log.info("consistency proof refused: %s", e)
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "no proof between these sizes")
        return proof_to_proto(proof, root=self.recorder.store.root(request.new_size))

    def AddCheckpoint(  # noqa: N802 -- gRPC method name
        self, request: ledger_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.AddCheckpointResponse:
        try:
            return self._add_checkpoint(request, context)
        except LedgerDamageError:
            # DATA_LOSS, not FAILED_PRECONDITION: the publisher reads
            # FAILED_PRECONDITION as "your log is inconsistent" (an incident),
            # and a damaged file here says nothing about the submitting log.
            log.exception("witness or ledger file damaged; restore it from backup")
            context.abort(grpc.StatusCode.DATA_LOSS, WITNESS_DAMAGED)
            raise  # unreachable: abort raises
        except StorageError:
            # UNAVAILABLE: a full disk or a busy file passes; the log tries again.
            log.exception("witness could not store or record a checkpoint")
            context.abort(grpc.StatusCode.UNAVAILABLE, WITNESS_UNAVAILABLE)
            raise  # unreachable: abort raises

    def _add_checkpoint(
        self, request: ledger_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.AddCheckpointResponse:
        """AddCheckpoint's work; a :class:`StorageError` is left to the caller to map."""
        caller = caller_department(context)
        submission = submission_from_proto(request)
        expected = f"fednode/{self.recorder.federation}/{caller}"
        try:
            origin = parse_checkpoint(parse_note(submission.note).text).origin
        except CheckpointError as e:
            log.info("malformed checkpoint from %s: %s", caller, e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed checkpoint")
        if origin != expected:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "a department may submit only its own log"
            )
        try:
            line = self.recorder.witness.add_checkpoint(
                submission.old_size, submission.proof, submission.note
            )
        except WitnessConflictError as e:
            context.set_trailing_metadata(((WITNESS_SIZE_KEY, str(e.witness_size)),))
            context.abort(grpc.StatusCode.ABORTED, f"witness holds size {e.witness_size}")
        except ForkError as e:
            log.warning("witness incident for %s: %s", origin, e)
            self.recorder.record(
                "witness.incident",
                peer=caller,
                outcome="error",
                detail={
                    "origin": origin,
                    "size": e.size,
                    "kind": type(e).__name__,
                    "reason": str(e),
                    "evidence": base64.b64encode(e.evidence).decode(),
                },
            )
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "checkpoint is inconsistent")
        except WitnessError as e:
            log.info("checkpoint from %s refused: %s", caller, e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "checkpoint refused")
        checkpoint = parse_checkpoint(parse_note(submission.note).text)
        # The log's signed note and this witness's cosignature line make the
        # entry a claim any auditor can check: the log signed this root, and
        # this witness cosigned it (ledger/verify.py matches it to the log).
        self.recorder.record(
            "witness.cosigned",
            peer=caller,
            detail={
                "origin": origin,
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "note": submission.note.decode(),
                "cosignature": line.encode(),
            },
        )
        return cosignature_to_proto(line)


def add_services(server: grpc.Server, runtime: NodeRuntime) -> None:
    """Mount the Ledger service on the node's network server."""
    ledger_pb2_grpc.add_LedgerServicer_to_server(LedgerService(runtime), server)
