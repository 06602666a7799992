"""Key files: round trips, permissions, and refusals of wrong key material."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
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
    (tmp_path / "hpke.key").chmod(0o600)
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


_SAVERS: dict[str, Callable[[Path], None]] = {
    "tls": lambda p: keys.save_tls_key(p, keys.generate_tls_key()),
    "ed25519": lambda p: keys.save_ed25519(p, keys.generate_ed25519()),
    "hpke": lambda p: keys.save_hpke(p, keys.generate_hpke()),
}
_LOADERS: dict[str, Callable[[Path], object]] = {
    "tls": keys.load_tls_key,
    "ed25519": keys.load_ed25519,
    "hpke": keys.load_hpke,
}


@pytest.mark.parametrize("kind", sorted(_SAVERS))
@pytest.mark.parametrize("mode", [0o604, 0o644, 0o620, 0o666, 0o601], ids=oct)
def test_key_file_open_to_others_is_refused_with_the_fix(
    kind: str, mode: int, tmp_path: Path
) -> None:
    path = tmp_path / "keys" / "key"
    _SAVERS[kind](path)
    path.chmod(mode)
    with pytest.raises(
        IdentityError, match=f"open to other users \\(mode {mode:04o}\\)"
    ) as refused:
        _LOADERS[kind](path)
    assert f"chmod 600 {path}" in (refused.value.hint or "")


@pytest.mark.parametrize("kind", sorted(_SAVERS))
def test_group_readable_key_file_is_accepted(kind: str, tmp_path: Path) -> None:
    # Container platforms mount secrets mode 0440 for the node's group.
    path = tmp_path / "key"
    _SAVERS[kind](path)
    path.chmod(0o440)
    _LOADERS[kind](path)


def test_leftover_temporary_file_does_not_lend_its_mode(tmp_path: Path) -> None:
    stale = tmp_path / ".signing.key.tmp"
    stale.write_bytes(b"left by a crash")
    stale.chmod(0o644)
    keys.save_ed25519(tmp_path / "signing.key", keys.generate_ed25519())
    assert stat.S_IMODE((tmp_path / "signing.key").stat().st_mode) == 0o600
    assert not stale.exists()


def test_key_is_never_written_through_a_link_at_the_temporary_path(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    elsewhere.chmod(0o644)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / ".signing.key.tmp").symlink_to(elsewhere)
    keys.save_ed25519(tmp_path / "keys" / "signing.key", keys.generate_ed25519())
    assert elsewhere.read_bytes() == b"untouched"
    keys.load_ed25519(tmp_path / "keys" / "signing.key")


def test_a_link_at_the_key_path_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    (tmp_path / "signing.key").symlink_to(elsewhere)
    keys.save_ed25519(tmp_path / "signing.key", keys.generate_ed25519())
    assert elsewhere.read_bytes() == b"untouched"
    assert not (tmp_path / "signing.key").is_symlink()


def test_new_key_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keys.save_tls_key(tmp_path / "home" / "keys" / "tls.key", keys.generate_tls_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "home" / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "home" / "keys" / "tls.key").stat().st_mode) == 0o600


def test_a_crash_before_the_rename_keeps_the_old_key_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "signing.key"
    keys.save_ed25519(path, keys.generate_ed25519())
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="Input/output error"):
        keys.save_ed25519(path, keys.generate_ed25519())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
