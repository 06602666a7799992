"""Signed notes, checkpoints and cosignatures (C2SP signed-note, tlog-checkpoint, cosignature)."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import (
    COSIGNATURE_TYPE,
    ED25519_TYPE,
    add_signatures,
    cosign,
    key_id,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from ledger.errors import CheckpointError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ORIGIN = "fednode/fed/alpha"
ROOT = hashlib.sha256(b"root").digest()


def test_note_layout_is_c2sp() -> None:
    note = sign_checkpoint(ORIGIN, 7, ROOT, KEY)
    text, sigs = note.split(b"\n\n")
    assert text == f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}".encode()
    line = sigs.decode()
    assert line.startswith(f"\u2014 {ORIGIN} ")
    blob = base64.b64decode(line.split(" ")[2])
    pub = KEY.public_key().public_bytes_raw()
    assert blob[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()[:4]
    KEY.public_key().verify(blob[4:], text + b"\n")
    assert verify_checkpoint(note, ORIGIN, KEY.public_key()).size == 7


def test_key_ids_differ_by_type() -> None:
    assert key_id(ORIGIN, ED25519_TYPE, KEY.public_key()) != key_id(
        ORIGIN, COSIGNATURE_TYPE, KEY.public_key()
    )


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"fednode/fed/alpha\n7\n", "no signature block"),
        ("fednode/fed/alpha\n7\nAAAA\n\n\u2014 x\n".encode(), "is not"),
        (b"fednode/fed/alpha\n7\nAAAA\n\n- x AAAAAAAA\n", "em dash"),
        ("fednode/fed/alpha\n7\nAAAA\n\n\u2014 x !!!!\n".encode(), "not base64"),
        (b"a\tb\n\n", "control character"),
        (b"\xff\n\n", "UTF-8"),
    ],
)
def test_malformed_notes(note: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_note(note)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"fednode/fed/alpha\n7\n", "origin, size and root"),
        (b"fed alpha\n7\nAAAA\n", "spaces"),
        (b"o\n07\nAAAA\n", "not a decimal"),
        (b"o\n7\nAAAA\n", "32 bytes"),
        (b"o\n7\n" + base64.b64encode(ROOT) + b"\n\n", "empty extension"),
    ],
)
def test_malformed_checkpoints(text: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_checkpoint(text)


def test_wrong_key_or_origin_is_refused() -> None:
    note = sign_checkpoint(ORIGIN, 7, ROOT, KEY)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(CheckpointError, match="no signature by the log key"):
        verify_checkpoint(note, ORIGIN, other)
    with pytest.raises(CheckpointError, match="origin is"):
        verify_checkpoint(note, "fednode/fed/beta", KEY.public_key())
    forged = note.replace(b"\n7\n", b"\n8\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(forged, ORIGIN, KEY.public_key())


def test_cosignature_round_trip_and_tamper() -> None:
    note = sign_checkpoint(ORIGIN, 7, ROOT, KEY)
    witness = Ed25519PrivateKey.generate()
    text = parse_note(note).text
    line = cosign(text, "fednode/fed/beta", witness, 1_700_000_000)
    assert line.signature[:8] == (1_700_000_000).to_bytes(8, "big")
    assert verify_cosignature(text, line, witness.public_key()) == 1_700_000_000
    merged = add_signatures(note, [line, line])
    assert merged.count("\u2014".encode()) == 2
    verify_checkpoint(merged, ORIGIN, KEY.public_key())
    late = type(line)(
        line.name, line.key_id, (1_700_000_001).to_bytes(8, "big") + line.signature[8:]
    )
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignature(text, late, witness.public_key())
    with pytest.raises(CheckpointError, match="unknown key ID"):
        verify_cosignature(text, line, KEY.public_key())


@given(st.binary(max_size=300))
def test_note_parser_raises_only_checkpoint_errors(data: bytes) -> None:
    with contextlib.suppress(CheckpointError):
        parse_checkpoint(parse_note(data).text)


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@given(st.integers(1, 3))
def test_a_signature_with_non_zero_padding_bits_is_refused(flip: int) -> None:
    # A 68-byte key ID + signature is 92 base64 characters ending in one "=": the
    # last character before the padding carries 2 unused bits.
    note = sign_checkpoint(ORIGIN, 7, ROOT, KEY)
    assert note.endswith(b"=\n") and not note.endswith(b"==\n")
    at = len(note) - 3
    mutated = note[:at] + bytes([_B64[_B64.index(note[at]) ^ flip]]) + note[at + 1 :]
    assert base64.b64decode(mutated.split(b" ")[-1]) == base64.b64decode(note.split(b" ")[-1])
    verify_checkpoint(note, ORIGIN, KEY.public_key())
    with pytest.raises(CheckpointError, match="signature line 1 is not canonical base64"):
        verify_checkpoint(mutated, ORIGIN, KEY.public_key())
