"""The one place where Ledger protobuf messages become domain values and back.

The ledger's byte formats (notes, entries, signature lines) travel unchanged
inside ``bytes`` fields; this module only packs and unpacks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.checkpoint import SignatureLine, parse_signature_line
from protocols.fednode.v1 import ledger_pb2

__all__ = [
    "Submission",
    "cosignature_from_proto",
    "cosignature_to_proto",
    "proof_to_proto",
    "submission_from_proto",
    "submission_to_proto",
]


@dataclass(frozen=True)
class Submission:
    """A checkpoint submitted to a witness."""

    old_size: int
    proof: list[bytes]
    note: bytes


def submission_to_proto(sub: Submission) -> ledger_pb2.AddCheckpointRequest:
    return ledger_pb2.AddCheckpointRequest(
        old_size=sub.old_size, consistency_proof=list(sub.proof), note=sub.note
    )


def submission_from_proto(msg: ledger_pb2.AddCheckpointRequest) -> Submission:
    return Submission(old_size=msg.old_size, proof=list(msg.consistency_proof), note=msg.note)


def cosignature_to_proto(line: SignatureLine) -> ledger_pb2.AddCheckpointResponse:
    return ledger_pb2.AddCheckpointResponse(cosignature=line.encode().encode())


def cosignature_from_proto(msg: ledger_pb2.AddCheckpointResponse) -> SignatureLine:
    """Raises CheckpointError when the line is malformed."""
    return parse_signature_line(msg.cosignature)


def proof_to_proto(
    hashes: Sequence[bytes], *, leaf: bytes = b"", root: bytes = b""
) -> ledger_pb2.ProofResponse:
    return ledger_pb2.ProofResponse(hashes=list(hashes), leaf=leaf, root=root)
