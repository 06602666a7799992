"""The proof of one entry that an operator hands to an auditor, checked offline.

``fednode ledger prove SEQ --json`` writes it: the entry's canonical bytes, its
inclusion path, the witness-cosigned checkpoint the path leads to, the log's
origin and the signed federation directory the node holds. An auditor who has
only that file and the federation CA certificate checks, in order:

1. the directory's signature under the CA (and, if asked, that it is not older
   than a serial the auditor knows), which gives the log's key and the witnesses';
2. the checkpoint's signature by that log key;
3. cosignatures from at least the directory's witness threshold of witnesses
   other than the log itself: a checkpoint the log signed alone could be one of
   two views it shows to different parties;
4. the entry: well formed, at the claimed index, and on the inclusion path to
   the checkpoint's root (RFC 9162 section 2.1.3.2).

Everything the file says is checked against keys from the CA-signed directory;
nothing in it is taken on trust. Any failure raises :class:`VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.checkpoint import cosignatures, parse_note, verify_checkpoint
from ledger.directory import parse_directory
from ledger.entry import parse_entry
from ledger.errors import LedgerError, VerificationError
from ledger.merkle import verify_inclusion

__all__ = ["PROOF_FIELDS", "CheckedProof", "check_proof_document"]

#: The fields of a proof document, as ``ledger prove --json`` writes them.
PROOF_FIELDS = ("seq", "size", "entry", "proof", "note", "origin", "directory")


@dataclass(frozen=True)
class CheckedProof:
    """What a verified proof establishes."""

    origin: str
    department: str
    seq: int
    event: str
    size: int
    root: bytes
    cosigners: tuple[str, ...]
    threshold: int
    directory_serial: int


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise VerificationError(f"proof field {name!r} must be a string")
    return value


def _count(document: Mapping[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VerificationError(f"proof field {name!r} must be a non-negative integer")
    return value


def check_proof_document(
    document: Mapping[str, Any], ca_pem: bytes, *, min_directory_serial: int = 0
) -> CheckedProof:
    """Verify a proof document (see the module docstring) against the federation CA.

    Raises:
        VerificationError: any check fails; the message names which.
    """
    try:
        directory = parse_directory(_text(document, "directory").encode(), ca_pem)
    except VerificationError:
        raise
    except LedgerError as e:
        raise VerificationError(f"the proof's directory: {e}") from e
    if directory.serial < min_directory_serial:
        raise VerificationError(
            f"the proof carries directory serial {directory.serial}, older than the "
            f"serial {min_directory_serial} required"
        )
    origin = _text(document, "origin")
    department = next(
        (d for d in directory.keys if directory.origin(d) == origin),
        None,
    )
    if department is None:
        raise VerificationError(
            f"log {origin!r} belongs to no department of directory serial {directory.serial}"
        )
    note = _text(document, "note").encode()
    try:
        checkpoint = verify_checkpoint(note, origin, directory.keys[department])
        cosigned = cosignatures(parse_note(note), directory.witness_keys(exclude=department))
    except LedgerError as e:
        raise VerificationError(f"the checkpoint of {origin}: {e}") from e
    if len(cosigned) < directory.witness_threshold:
        raise VerificationError(
            f"the checkpoint of {origin} (size {checkpoint.size}) has {len(cosigned)} witness "
            f"cosignatures, below the threshold of {directory.witness_threshold} in directory "
            f"serial {directory.serial}: it is not published"
        )
    size = _count(document, "size")
    if size != checkpoint.size:
        raise VerificationError(
            f"the proof says size {size}, its checkpoint is of size {checkpoint.size}"
        )
    seq = _count(document, "seq")
    try:
        entry = parse_entry(_text(document, "entry").encode())
        path = document.get("proof")
        if not isinstance(path, list) or not all(isinstance(h, str) for h in path):
            raise VerificationError("proof field 'proof' must be a list of base64 hashes")
        hashes = [base64.b64decode(h, validate=True) for h in path]
        if entry.seq != seq:
            raise VerificationError(f"the entry is seq {entry.seq}, the proof claims seq {seq}")
        verify_inclusion(entry.leaf, seq, checkpoint.size, hashes, checkpoint.root)
    except binascii.Error as e:
        raise VerificationError(f"a hash of the inclusion path is not base64: {e}") from e
    except VerificationError:
        raise
    except LedgerError as e:
        raise VerificationError(f"entry {seq} of {origin}: {e}") from e
    return CheckedProof(
        origin=origin,
        department=department,
        seq=seq,
        event=entry.event,
        size=checkpoint.size,
        root=checkpoint.root,
        cosigners=tuple(sorted(cosigned)),
        threshold=directory.witness_threshold,
        directory_serial=directory.serial,
    )
