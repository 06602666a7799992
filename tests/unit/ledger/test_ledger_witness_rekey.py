"""A department that enrols again under new keys starts a new log, which witnesses cosign.

The witness held the old log's view; the new log starts again at size 0 and
would otherwise be refused as a rollback for ever. Only a key change in the
(CA-signed) directory starts a new view: under an unchanged key, a smaller
checkpoint is still a rollback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.checkpoint import log_name
from ledger.errors import WitnessError
from ledger.store import LedgerStore
from ledger.witness import RollbackError, Witness, WitnessState
from tests.unit.ledger.helpers import fill

ORIGIN = log_name("testfed", "alpha")


def _witness(tmp_path: Path, directory: dict[str, Ed25519PublicKey]) -> Witness:
    return Witness(
        WitnessState(tmp_path / "beta-witness.db"),
        log_name("testfed", "beta"),
        Ed25519PrivateKey.generate(),
        directory.get,
    )


def test_a_new_key_starts_a_new_view_and_an_old_key_is_refused(tmp_path: Path) -> None:
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    directory = {ORIGIN: old_key.public_key()}
    witness = _witness(tmp_path, directory)
    old_log = LedgerStore(tmp_path / "old.db", "alpha")
    fill(old_log, 6)
    witness.add_checkpoint(0, [], old_log.sign_checkpoint(ORIGIN, old_key).note)
    assert witness.state.get(ORIGIN) == (6, old_log.root())

    # Re-enrolled: the authority's directory now names the new key.
    directory[ORIGIN] = new_key.public_key()
    new_log = LedgerStore(tmp_path / "new.db", "alpha")
    fill(new_log, 3)
    witness.add_checkpoint(0, [], new_log.sign_checkpoint(ORIGIN, new_key).note)
    assert witness.state.get(ORIGIN) == (3, new_log.root())
    # The new log goes on growing as usual.
    fill(new_log, 2, 3)
    grown = new_log.sign_checkpoint(ORIGIN, new_key)
    witness.add_checkpoint(3, new_log.consistency_proof(3, 5), grown.note)
    assert witness.state.get(ORIGIN) == (5, new_log.root())
    # The old key signs nothing any more.
    fill(old_log, 2, 6)
    with pytest.raises(WitnessError, match="no signature by the log key"):
        witness.add_checkpoint(6, [], old_log.sign_checkpoint(ORIGIN, old_key).note)
    # And under the new key, going back is a rollback as ever.
    shorter = LedgerStore(tmp_path / "shorter.db", "alpha")
    fill(shorter, 4)
    with pytest.raises(RollbackError, match="below the cosigned size 5"):
        witness.add_checkpoint(5, [], shorter.sign_checkpoint(ORIGIN, new_key).note)
    for store in (old_log, new_log, shorter):
        store.close()
