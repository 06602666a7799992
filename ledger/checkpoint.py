"""Checkpoints as C2SP signed notes, and witness cosignatures (tlog-cosignature/v1).

A checkpoint body (C2SP tlog-checkpoint) is three lines::

    fednode/<federation>/<department>
    <size in decimal>
    <base64 of the 32-byte root>

A signed note (C2SP signed-note) is the body, one empty line, then one line per
signature: ``"\u2014 " + key name + " " + base64(key ID || signature)``. The key
ID is the first four bytes of ``SHA-256(key name || 0x0A || type || public key)``
where ``type`` is 0x01 for an Ed25519 note signature and 0x04 for a
cosignature/v1. The log signs the body bytes; a witness signs
``"cosignature/v1\\ntime <t>\\n" + body`` and its signature bytes are
``key ID || t as 8 bytes big-endian || Ed25519 signature``.

Both the log and its witnesses name their keys ``fednode/<federation>/<department>``;
the type byte keeps the key IDs of the two roles apart.

Verifiers raise :class:`~ledger.errors.CheckpointError`; they never return a bool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import CheckpointError
from ledger.merkle import HASH_SIZE

__all__ = [
    "COSIGNATURE_TYPE",
    "ED25519_TYPE",
    "Checkpoint",
    "Note",
    "SignatureLine",
    "add_signatures",
    "checkpoint_text",
    "cosign",
    "cosignatures",
    "key_id",
    "log_name",
    "parse_checkpoint",
    "parse_note",
    "parse_signature_line",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_cosignature",
]

ED25519_TYPE = 0x01
COSIGNATURE_TYPE = 0x04
_DASH = "\u2014 "
_NAME_RE = re.compile(r"[^\s+\u2014]+\Z")
_ORIGIN_RE = re.compile(r"[\x21-\x7e]+\Z")
_SIZE_RE = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
_MAX_NOTE = 64 * 1024


def log_name(federation: str, department: str) -> str:
    """Return the checkpoint origin and key name ``fednode/<federation>/<department>``."""
    return f"fednode/{federation}/{department}"


def key_id(name: str, sig_type: int, public_key: Ed25519PublicKey) -> bytes:
    """Return the 4-byte signed-note key ID of ``name`` for ``sig_type``."""
    raw = public_key.public_bytes_raw()
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + raw).digest()[:4]


@dataclass(frozen=True)
class SignatureLine:
    """One signature line of a note: key name, key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def encode(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    """A parsed signed note: the signed text (ending in a newline) and its signature lines."""

    text: bytes
    signatures: tuple[SignatureLine, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + "".join(s.encode() for s in self.signatures).encode()


@dataclass(frozen=True)
class Checkpoint:
    """The parsed body of a checkpoint note."""

    origin: str
    size: int
    root: bytes
    text: bytes


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines.

    Raises:
        CheckpointError: the note is too large, not UTF-8, has no signature
            block, or a signature line is malformed.
    """
    if len(data) > _MAX_NOTE:
        raise CheckpointError(f"note is {len(data)} bytes, more than {_MAX_NOTE}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"note is not UTF-8: {e}") from e
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("note holds a control character")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise CheckpointError(
            "note has no signature block (expected an empty line, then signatures)"
        )
    body, block = text[: cut + 1], text[cut + 2 :]
    lines = block.split("\n")[:-1]
    if not lines:
        raise CheckpointError("note carries no signatures")
    signatures = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_DASH):
            raise CheckpointError(f"signature line {number} does not start with an em dash")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2 or not _NAME_RE.match(parts[0]):
            raise CheckpointError(f"signature line {number} is not '\u2014 <name> <base64>'")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except binascii.Error as e:
            raise CheckpointError(f"signature line {number} is not base64: {e}") from e
        if base64.b64encode(blob).decode() != parts[1]:
            # Non-zero padding bits decode to the same bytes: one signature would
            # have several encodings, and notes would not be unique byte strings.
            raise CheckpointError(f"signature line {number} is not canonical base64")
        if len(blob) < 5:
            raise CheckpointError(f"signature line {number} is too short")
        signatures.append(SignatureLine(parts[0], blob[:4], blob[4:]))
    return Note(text=body.encode(), signatures=tuple(signatures))


def parse_signature_line(line: bytes) -> SignatureLine:
    """Parse one signature line (``"\u2014 name base64\n"``), e.g. a cosignature sent alone.

    Raises:
        CheckpointError: the line is malformed.
    """
    if not line.endswith(b"\n") or line.count(b"\n") != 1:
        raise CheckpointError("a signature line must be one line ending in a newline")
    return parse_note(b"x\n\n" + line).signatures[0]


def parse_checkpoint(text: bytes) -> Checkpoint:
    """Parse a checkpoint body (the signed text of a note).

    Raises:
        CheckpointError: the origin, size or root line is missing or malformed.
    """
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"checkpoint is not UTF-8: {e}") from e
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError(
            "checkpoint needs origin, size and root lines, each ending in a newline"
        )
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not _ORIGIN_RE.match(origin):
        raise CheckpointError(f"checkpoint origin {origin!r} is empty or holds spaces")
    if not _SIZE_RE.match(size_text):
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    if any(not line for line in lines[3:-1]):
        raise CheckpointError("checkpoint has an empty extension line")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as e:
        raise CheckpointError(f"checkpoint root is not base64: {e}") from e
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_text:
        raise CheckpointError(f"checkpoint root must be {HASH_SIZE} bytes in canonical base64")
    return Checkpoint(origin=origin, size=int(size_text), root=root, text=text)


def checkpoint_text(origin: str, size: int, root: bytes) -> bytes:
    """Return the checkpoint body for ``(origin, size, root)``.

    Raises:
        CheckpointError: the origin, size or root cannot be written.
    """
    if not _ORIGIN_RE.match(origin) or size < 0 or len(root) != HASH_SIZE:
        raise CheckpointError(f"cannot write a checkpoint for {origin!r} size {size}")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def sign_checkpoint(origin: str, size: int, root: bytes, key: Ed25519PrivateKey) -> bytes:
    """Return a checkpoint note signed by the log key named ``origin``.

    Raises:
        CheckpointError: the origin, size or root cannot be written.
    """
    text = checkpoint_text(origin, size, root)
    line = SignatureLine(origin, key_id(origin, ED25519_TYPE, key.public_key()), key.sign(text))
    return Note(text=text, signatures=(line,)).encode()


def verify_checkpoint(note: bytes, origin: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Check the log's signature on a checkpoint note and return its body.

    Raises:
        CheckpointError: the note is malformed, names another origin, or carries
            no valid signature by ``origin``'s key.
    """
    parsed = parse_note(note)
    checkpoint = parse_checkpoint(parsed.text)
    if checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint origin is {checkpoint.origin!r}, expected {origin!r}")
    kid = key_id(origin, ED25519_TYPE, public_key)
    candidates = [s for s in parsed.signatures if s.name == origin and s.key_id == kid]
    if not candidates:
        raise CheckpointError(
            f"checkpoint size {checkpoint.size} has no signature by the log key of {origin}"
        )
    for sig in candidates:
        try:
            public_key.verify(sig.signature, parsed.text)
        except InvalidSignature as e:
            raise CheckpointError(
                f"checkpoint size {checkpoint.size}: the log signature of {origin} does not verify"
            ) from e
    return checkpoint


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


def cosign(text: bytes, name: str, key: Ed25519PrivateKey, timestamp: int) -> SignatureLine:
    """Return a witness's cosignature/v1 line over the checkpoint body ``text``."""
    sig = key.sign(_cosigned_message(text, timestamp))
    kid = key_id(name, COSIGNATURE_TYPE, key.public_key())
    return SignatureLine(name, kid, timestamp.to_bytes(8, "big") + sig)


def verify_cosignature(text: bytes, line: SignatureLine, public_key: Ed25519PublicKey) -> int:
    """Check one cosignature/v1 line over ``text`` and return its timestamp.

    Raises:
        CheckpointError: the key ID, length or signature is wrong.
    """
    if line.key_id != key_id(line.name, COSIGNATURE_TYPE, public_key):
        raise CheckpointError(f"cosignature by {line.name} has an unknown key ID")
    if len(line.signature) != 8 + 64:
        raise CheckpointError(
            f"cosignature by {line.name} is {len(line.signature)} bytes, expected 72"
        )
    timestamp = int.from_bytes(line.signature[:8], "big")
    try:
        public_key.verify(line.signature[8:], _cosigned_message(text, timestamp))
    except InvalidSignature as e:
        raise CheckpointError(f"cosignature by {line.name} does not verify") from e
    return timestamp


def add_signatures(note: bytes, lines: Iterable[SignatureLine]) -> bytes:
    """Return ``note`` with ``lines`` appended, skipping lines it already carries.

    Raises:
        CheckpointError: ``note`` is malformed.
    """
    parsed = parse_note(note)
    merged = list(parsed.signatures)
    for line in lines:
        if line not in merged:
            merged.append(line)
    return Note(text=parsed.text, signatures=tuple(merged)).encode()


def cosignatures(note: Note, witnesses: Mapping[str, Ed25519PublicKey]) -> dict[str, int]:
    """Return ``{witness name: timestamp}`` for every valid cosignature in ``note``.

    Lines by unknown names, or by a witness under another key ID (for example
    the log's own note signature), are ignored; a line that claims a known
    witness's cosignature key ID but does not verify raises.

    Raises:
        CheckpointError: a cosignature with a known key ID does not verify.
    """
    found: dict[str, int] = {}
    for line in note.signatures:
        key = witnesses.get(line.name)
        if key is None or line.key_id != key_id(line.name, COSIGNATURE_TYPE, key):
            continue
        found[line.name] = verify_cosignature(note.text, line, key)
    return found
