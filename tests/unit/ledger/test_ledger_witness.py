"""Witnessing: consistent growth is cosigned; forks, rollbacks and bad signatures are refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import cosignatures, parse_note, sign_checkpoint
from ledger.errors import LedgerDamageError, WitnessError
from ledger.merkle import EMPTY_ROOT
from ledger.store import LedgerStore
from ledger.witness import (
    ForkError,
    RollbackError,
    UnknownLogError,
    Witness,
    WitnessConflictError,
    WitnessState,
)
from tests.unit.ledger.helpers import Federation, fill


def test_witness_cosigns_consistent_growth(federation: Federation) -> None:
    store = federation.store("alpha")
    fill(store, 5)
    federation.publish("alpha")
    fill(store, 9, 5)
    cp = federation.publish("alpha")
    witnesses = {federation.origin(d): federation.keys[d].public_key() for d in ("beta", "gamma")}
    assert set(cosignatures(parse_note(cp.note), witnesses)) == set(witnesses)
    assert federation.witnesses["beta"].state.get(federation.origin("alpha")) == (14, cp.root)


def test_witness_state_survives_restart(federation: Federation, tmp_path: Path) -> None:
    fill(federation.store("alpha"), 3)
    cp = federation.publish("alpha")
    federation.witnesses["beta"].state.close()
    reopened = WitnessState(tmp_path / "beta" / "witness.db")
    assert reopened.get(federation.origin("alpha")) == (3, cp.root)
    reopened.close()
    federation.witnesses["beta"].state = WitnessState(tmp_path / "beta" / "witness.db")


def _fork(federation: Federation, tmp_path: Path, entries: int) -> LedgerStore:
    """A second ledger for alpha, signed with alpha's real key: a split view."""
    fork = LedgerStore(tmp_path / "fork.db", "alpha")
    fill(fork, entries, start=1000)
    return fork


def test_witness_detects_a_fork(federation: Federation, tmp_path: Path) -> None:
    fill(federation.store("alpha"), 6)
    federation.publish("alpha")
    witness = federation.witnesses["beta"]
    fork = _fork(federation, tmp_path, 9)
    forked = fork.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    with pytest.raises(ForkError, match="not consistent with cosigned size 6") as caught:
        witness.add_checkpoint(6, fork.consistency_proof(6, 9), forked.note)
    assert caught.value.evidence == forked.note
    assert caught.value.origin == federation.origin("alpha")
    # The witness's view is unchanged: the honest log can still grow.
    fill(federation.store("alpha"), 2, 6)
    federation.publish("alpha")
    fork.close()


def test_witness_detects_a_second_root_for_the_same_size(
    federation: Federation, tmp_path: Path
) -> None:
    fill(federation.store("alpha"), 6)
    federation.publish("alpha")
    fork = _fork(federation, tmp_path, 6)
    forked = fork.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    with pytest.raises(ForkError, match="second root for size 6"):
        federation.witnesses["gamma"].add_checkpoint(6, [], forked.note)
    fork.close()


def test_witness_detects_a_rollback(federation: Federation, tmp_path: Path) -> None:
    fill(federation.store("alpha"), 6)
    federation.publish("alpha")
    fork = _fork(federation, tmp_path, 4)
    smaller = fork.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    with pytest.raises(
        RollbackError, match="rolled back: checkpoint size 4 is below the cosigned size 6"
    ):
        federation.witnesses["beta"].add_checkpoint(6, [], smaller.note)
    fork.close()


def test_witness_refuses_wrong_old_size_with_its_own_size(federation: Federation) -> None:
    store = federation.store("alpha")
    fill(store, 4)
    federation.publish("alpha")
    fill(store, 4, 4)
    cp = store.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    with pytest.raises(WitnessConflictError) as caught:
        federation.witnesses["beta"].add_checkpoint(2, store.consistency_proof(2, 8), cp.note)
    assert caught.value.witness_size == 4


def test_witness_refuses_a_bad_signature_and_unknown_logs(federation: Federation) -> None:
    fill(federation.store("alpha"), 2)
    root = federation.store("alpha").root()
    impostor = sign_checkpoint(federation.origin("alpha"), 2, root, Ed25519PrivateKey.generate())
    with pytest.raises(WitnessError, match="no signature by the log key"):
        federation.witnesses["beta"].add_checkpoint(0, [], impostor)
    unknown = sign_checkpoint("fednode/testfed/delta", 2, root, Ed25519PrivateKey.generate())
    with pytest.raises(UnknownLogError, match="delta"):
        federation.witnesses["beta"].add_checkpoint(0, [], unknown)
    with pytest.raises(WitnessError, match="malformed"):
        federation.witnesses["beta"].add_checkpoint(0, [], b"garbage")


def test_witness_with_bad_proof_is_a_fork(federation: Federation) -> None:
    store = federation.store("alpha")
    fill(store, 5)
    federation.publish("alpha")
    fill(store, 3, 5)
    cp = store.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    proof = store.consistency_proof(5, 8)
    proof[0] = bytes(32)
    with pytest.raises(ForkError):
        federation.witnesses["beta"].add_checkpoint(5, proof, cp.note)
    assert isinstance(federation.witnesses["beta"], Witness)


def _fresh_witness(tmp_path: Path, log_key: Ed25519PrivateKey, origin: str) -> Witness:
    return Witness(
        WitnessState(tmp_path / "fresh-witness.db"),
        "fednode/testfed/beta",
        Ed25519PrivateKey.generate(),
        {origin: log_key.public_key()}.get,
    )


@pytest.mark.parametrize("size", [2**63, 9_999_999_999_999_999_999])
def test_witness_refuses_a_size_it_cannot_hold(tmp_path: Path, size: int) -> None:
    """A note may say 19 digits; SQLite holds 63 bits. Refused as a WitnessError, not stored."""
    key = Ed25519PrivateKey.generate()
    origin = "fednode/testfed/alpha"
    witness = _fresh_witness(tmp_path, key, origin)
    with pytest.raises(WitnessError, match="above the largest a witness holds"):
        witness.add_checkpoint(0, [], sign_checkpoint(origin, size, bytes(range(32)), key))
    assert witness.state.get(origin) is None
    # The largest size it holds is still accepted.
    witness.add_checkpoint(0, [], sign_checkpoint(origin, 2**63 - 1, bytes(range(32)), key))
    assert witness.state.get(origin) == (2**63 - 1, bytes(range(32)))
    witness.state.close()


def test_witness_refuses_an_empty_tree_with_a_made_up_root(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    origin = "fednode/testfed/alpha"
    witness = _fresh_witness(tmp_path, key, origin)
    with pytest.raises(WitnessError, match="size 0 a root other than the empty tree"):
        witness.add_checkpoint(0, [], sign_checkpoint(origin, 0, bytes(32), key))
    assert witness.state.get(origin) is None
    witness.add_checkpoint(0, [], sign_checkpoint(origin, 0, EMPTY_ROOT, key))
    assert witness.state.get(origin) == (0, EMPTY_ROOT)
    witness.state.close()


def test_witness_state_syncs_its_new_directory(tmp_path: Path, synced: list[str]) -> None:
    """The view is persisted before a cosignature; a power loss must not take its file."""
    state = WitnessState(tmp_path / "home" / "ledger" / "witness.sqlite")
    state.close()
    assert {str(tmp_path), str(tmp_path / "home"), str(tmp_path / "home" / "ledger")} <= set(synced)


def _damage_held_note(path: Path, change: Callable[[bytes], bytes]) -> None:
    conn = sqlite3.connect(path)
    (note,) = conn.execute("SELECT note FROM views").fetchone()
    conn.execute("UPDATE views SET note=?", (change(bytes(note)),))
    conn.commit()
    conn.close()


def _flip_signature(note: bytes) -> bytes:
    """One base64 character of the log's signature changed (not its key ID)."""
    at = note.rindex(b" ") + 20
    return note[:at] + (b"A" if note[at : at + 1] != b"A" else b"B") + note[at + 1 :]


def _other_size(note: bytes) -> bytes:
    origin, size, rest = note.split(b"\n", 2)
    return b"\n".join((origin, str(int(size) + 1).encode(), rest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_flip_signature, "damaged: checkpoint size 5: the log signature .* does not verify"),
        (_other_size, "damaged: checkpoint size 6: the log signature .* does not verify"),
        (lambda note: note[:20], "damaged: note has no signature block"),
    ],
)
def test_a_damaged_view_is_not_taken_for_a_new_log_key(
    tmp_path: Path, change: Callable[[bytes], bytes], message: str
) -> None:
    """Only a note without a signature under the directory's key is of another log: a
    damaged one must not drop the view, or the witness would cosign a fork."""
    key = Ed25519PrivateKey.generate()
    origin = "fednode/testfed/alpha"
    witness = _fresh_witness(tmp_path, key, origin)
    witness.add_checkpoint(0, [], sign_checkpoint(origin, 5, bytes([1]) * 32, key))
    _damage_held_note(tmp_path / "fresh-witness.db", change)
    fork = sign_checkpoint(origin, 5, bytes([2]) * 32, key)
    for old_size in (0, 5):
        with pytest.raises(LedgerDamageError, match=message):
            witness.add_checkpoint(old_size, [], fork)
    assert witness.state.get(origin) == (5, bytes([1]) * 32)
    witness.state.close()
