"""Key files: round trips, permissions, and refusals of wrong key material."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from node.errors import IdentityError
from node.identity import keys


def test_hpke_key_round_trips_and_decrypts(tmp_path: Path) -> None:
    pair = keys.generate_hpke()
    keys.save_hpke(tmp_path / "hpke.key", pair)
    loaded = keys.load_hpke(tmp_path / "hpke.key")
    assert loaded.public_bytes == pair.public_bytes
    assert (tmp_path / "hpke.key").stat().st_mode & 0o777 == 0o600
    sealed = keys.HPKE_SUITE.encrypt(b"content key", keys.hpke_public_from_bytes(pair.public_bytes))
    assert keys.HPKE_SUITE.decrypt(sealed, loaded.private) == b"content key"


def test_hpke_wrong_key_cannot_decrypt() -> None:
    sealed = keys.HPKE_SUITE.encrypt(b"k", keys.generate_hpke().public)
    with pytest.raises(InvalidTag):
        keys.HPKE_SUITE.decrypt(sealed, keys.generate_hpke().private)


def test_ed25519_signature_checks(tmp_path: Path) -> None:
    key = keys.generate_ed25519()
    keys.save_ed25519(tmp_path / "signing.key", key)
    loaded = keys.load_ed25519(tmp_path / "signing.key")
    public = keys.ed25519_public_raw(loaded)
    keys.verify_ed25519(public, key.sign(b"m"), b"m", what="test")
    with pytest.raises(IdentityError, match="bad Ed25519 signature on test"):
        keys.verify_ed25519(public, key.sign(b"m"), b"n", what="test")


def test_wrong_key_type_is_refused(tmp_path: Path) -> None:
    keys.save_tls_key(tmp_path / "tls.key", keys.generate_tls_key())
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        keys.load_ed25519(tmp_path / "tls.key")
    (tmp_path / "hpke.key").write_bytes(b"garbage")
    with pytest.raises(IdentityError, match="does not start with"):
        keys.load_hpke(tmp_path / "hpke.key")
    with pytest.raises(IdentityError, match="must be 1216 bytes"):
        keys.hpke_public_from_bytes(b"\x00" * 10)


def test_missing_key_names_a_fix(tmp_path: Path) -> None:
    with pytest.raises(IdentityError) as missing:
        keys.load_ed25519(tmp_path / "nope.key")
    # An enrolled node's keys cannot be made again ('fednode init' refuses an existing
    # home): the fix is the backup, or the right --home.
    hint = missing.value.hint or ""
    assert "restore keys/ from the node's backup" in hint and "--home" in hint
