"""Verifying the logs of a department that enrolled again under new keys.

alpha runs under its first key (directory serial 1) and its checkpoints are
cosigned by beta and gamma, who record what they cosigned. The authority
revokes alpha, alpha enrols again in a fresh home (a new log from seq 0)
and directory serial 3 names its new key; the witnesses start a new view of
the new log and cosign it. The old log is evidence the audit must keep
verifiable under the key its own directory names; the new log is verified
under the new key; the two are two logs, not a fork. Under one key, a second
bundle of a department and every fork, rollback and split view still fail.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import sign_checkpoint
from ledger.errors import VerificationError
from ledger.verify import verify_bundle
from ledger.witness import Witness, WitnessState
from tests.unit.ledger.helpers import Federation, fill
from tests.unit.ledger.reenrolment import (
    NEW_SERIAL,
    OLD_SERIAL,
    Rekeyed,
    export,
    publish_claimed,
)

PREVIOUS_KEY_NOTE = (
    f"old-alpha: log of alpha under its previous key, from directory serial {OLD_SERIAL} "
    f"(directory serial {NEW_SERIAL} names another key"
)


@pytest.mark.parametrize(
    "names",
    [
        ("old_alpha", "new_alpha", "beta", "gamma"),
        ("old_alpha", "beta"),
        ("new_alpha", "beta"),
        ("old_alpha", "new_alpha"),
        ("beta", "gamma"),
        ("old_alpha",),
    ],
    ids="+".join,
)
def test_both_logs_of_a_reenrolled_department_verify(
    rekeyed: Rekeyed, names: tuple[str, ...]
) -> None:
    paths = [getattr(rekeyed, name) for name in names]
    report = verify_bundle(
        paths, ca_pem=rekeyed.federation.ca_pem, require_published=len(names) > 1
    )
    by_path = {b.path: b for b in report.bundles}
    if "old_alpha" in names:
        old = by_path[rekeyed.old_alpha]
        assert (old.entries, old.published_size, old.directory_serial) == (16, 16, OLD_SERIAL)
        if len(names) > 1:
            assert sum(PREVIOUS_KEY_NOTE in note for note in report.notes) == 1
            assert report.policy_serial == NEW_SERIAL
        if "beta" in names:
            # beta's claims about the old log are checked against it, under the old key.
            assert old.witnessed_size == 16
    else:
        assert not any("previous key" in note for note in report.notes)
    if "new_alpha" in names:
        new = by_path[rekeyed.new_alpha]
        assert (new.entries, new.published_size) == (9, 9)
        if "beta" in names:
            assert new.witnessed_size == 9


def test_claims_about_the_old_log_need_a_directory_naming_its_key(rekeyed: Rekeyed) -> None:
    # Without a bundle carrying the old directory, the old key is named nowhere:
    # beta's claims about the old log are set aside, not failed.
    report = verify_bundle([rekeyed.beta], ca_pem=rekeyed.federation.ca_pem)
    assert any("keys the directory no longer names" in note for note in report.notes)
    with_old = verify_bundle([rekeyed.beta, rekeyed.old_alpha], ca_pem=rekeyed.federation.ca_pem)
    assert not any("no longer names" in note for note in with_old.notes)
    assert with_old.witnessed_checked > report.witnessed_checked


def _beta_witnessed_by_old_alpha(federation: Federation, _: Ed25519PrivateKey) -> None:
    fill(federation.store("beta"), 3)
    publish_claimed(federation, "beta")  # old alpha and gamma cosign; old alpha records it


def test_a_witness_under_its_previous_key_does_not_count_towards_the_threshold(
    build: Callable[..., Rekeyed],
) -> None:
    # old alpha cosigned beta's checkpoint: its claim is checked against beta's
    # bundle, but the newest directory names another key for alpha, so it does
    # not make beta's entries count as witnessed (gamma's bundle is not given).
    built = build(before=_beta_witnessed_by_old_alpha)
    report = verify_bundle([built.old_alpha, built.beta], ca_pem=built.federation.ca_pem)
    beta = report.bundles[1]
    assert report.witnessed_checked >= 1
    assert beta.witnessed_size == 0 and beta.published_size > 0


def test_the_old_log_exported_with_the_new_directory_fails_naming_it(
    rekeyed: Rekeyed, tmp_path: Path
) -> None:
    # A bundle is checked under the key its own directory names: the old log
    # carrying the directory of the new key is not verifiable on its own terms.
    mixed = tmp_path / "old-alpha-new-directory"
    mixed.mkdir()
    for part in rekeyed.old_alpha.rglob("*"):
        target = mixed / part.relative_to(rekeyed.old_alpha)
        if part.is_dir():
            target.mkdir()
        else:
            target.write_bytes(part.read_bytes())
    (mixed / "directory.json").write_bytes(rekeyed.federation.directory_json)
    with pytest.raises(
        VerificationError,
        match=rf"checkpoint size 10: .*no signature by the log key of .*alpha, the key "
        rf"directory serial {NEW_SERIAL} names for alpha",
    ):
        verify_bundle([mixed, rekeyed.beta], ca_pem=rekeyed.federation.ca_pem)


def _second_bundle_under_old_key(rekeyed: Rekeyed, out: Path, entries: int) -> Path:
    """Another log of alpha under its old key, as the holder of the compromised key
    could write it, carrying the old directory."""
    federation = Federation(out.parent / "forger", threshold=1)
    federation.ca_key, federation.ca_pem = rekeyed.federation.ca_key, rekeyed.federation.ca_pem
    federation.keys["alpha"] = rekeyed.old_key
    federation.directory_json = (rekeyed.old_alpha / "directory.json").read_bytes()
    fill(federation.store("alpha"), entries)
    store = federation.store("alpha")
    cp = store.sign_checkpoint(federation.origin("alpha"), rekeyed.old_key)
    lines = [
        witness.add_checkpoint(0, [], cp.note)
        for name, witness in federation.witnesses.items()
        if name != "alpha"
    ]
    store.add_cosignatures(cp.size, lines)
    path = export(federation, "alpha", out)
    federation.close()
    return path


def test_two_bundles_of_one_department_under_one_key_still_fail(
    rekeyed: Rekeyed, tmp_path: Path
) -> None:
    forged = _second_bundle_under_old_key(rekeyed, tmp_path / "forged", 4)
    with pytest.raises(VerificationError, match="two bundles are from the same department"):
        verify_bundle([rekeyed.old_alpha, forged], ca_pem=rekeyed.federation.ca_pem)


def test_a_rewritten_old_log_still_fails_against_its_witnesses(
    rekeyed: Rekeyed, tmp_path: Path
) -> None:
    # The holder of the compromised key rewrites the old log: beta's claims under
    # the old key bind it, and the new log's bundle does not stand in for it.
    forged = _second_bundle_under_old_key(rekeyed, tmp_path / "forged", 16)
    with pytest.raises(VerificationError, match="the log was rewritten after it was witnessed"):
        verify_bundle([forged, rekeyed.new_alpha, rekeyed.beta], ca_pem=rekeyed.federation.ca_pem)


def test_a_split_view_under_the_old_key_still_fails(rekeyed: Rekeyed, tmp_path: Path) -> None:
    # gamma records cosigning another root of the OLD log for size 16 (the
    # compromised key signed it): with the old directory among the bundles,
    # that is a split view against beta's claim.
    federation = rekeyed.federation
    origin = federation.origin("alpha")
    note = sign_checkpoint(origin, 16, b"\x33" * 32, rekeyed.old_key)
    gamma_witness = Witness(
        WitnessState(tmp_path / "gamma-witness.db"),
        federation.origin("gamma"),
        federation.keys["gamma"],
        {origin: rekeyed.old_key.public_key()}.get,
    )
    line = gamma_witness.add_checkpoint(0, [], note)
    gamma_witness.state.close()
    federation.store("gamma").append(
        {
            "event": "witness.cosigned",
            "peer": "alpha",
            "detail": {
                "origin": origin,
                "size": 16,
                "root": base64.b64encode(b"\x33" * 32).decode(),
                "note": note.decode(),
                "cosignature": line.encode(),
            },
        }
    )
    gamma = export(federation, "gamma", tmp_path / "gamma-split", published_only=False)
    with pytest.raises(VerificationError, match="alpha signed two roots for size 16"):
        verify_bundle([rekeyed.old_alpha, rekeyed.beta, gamma], ca_pem=rekeyed.federation.ca_pem)


# Shares: a receipt is checked under the key its signer had, and matched to that log.


def _shares_with_the_old_log(federation: Federation, _: Ed25519PrivateKey) -> None:
    federation.share("beta", "alpha")  # receipt signed by alpha's old key
    federation.share("alpha", "beta")


def test_shares_with_the_old_log_are_matched_in_the_old_bundle(
    build: Callable[..., Rekeyed],
) -> None:
    built = build(before=_shares_with_the_old_log)
    bundles = [built.old_alpha, built.new_alpha, built.beta, built.gamma]
    report = verify_bundle(bundles, ca_pem=built.federation.ca_pem, require_published=True)
    assert report.shares_checked == 2 and report.shares_unmatched_peers == 0
    # Without a directory naming the old key, beta's receipt from the old log cannot
    # be checked: the failure says which bundle is missing.
    with pytest.raises(
        VerificationError,
        match=r"beta: entry seq \d+: receipt for share \w+ is not signed by alpha under any of "
        r"its 1 key\(s\).*add a bundle carrying a directory that names its earlier key",
    ):
        verify_bundle([built.new_alpha, built.beta], ca_pem=built.federation.ca_pem)


def _signed_as(federation: Federation, key: Ed25519PrivateKey) -> None:
    """beta records a share to alpha's NEW log whose receipt ``key`` signed."""
    federation.keys["signer"] = key
    federation.share("beta", "alpha", receipt_signer="signer")
    del federation.keys["signer"]


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        (
            lambda old: old,
            # Under the old key it is a share to the old log, which never received it.
            r"beta: entry seq \d+: share \w+ sent to alpha has no share.received in its ledger",
        ),
        (
            lambda old: Ed25519PrivateKey.generate(),
            r"beta: entry seq \d+: receipt for share \w+ is not signed by alpha under any of "
            r"its 2 key\(s\)",
        ),
    ],
    ids=["old-key", "no-directory-names-it"],
)
def test_a_receipt_under_the_old_or_an_unknown_key_does_not_vouch_for_the_new_log(
    build: Callable[..., Rekeyed],
    signer: Callable[[Ed25519PrivateKey], Ed25519PrivateKey],
    message: str,
) -> None:
    built = build(after=lambda fed, old: _signed_as(fed, signer(old)))
    bundles = [built.old_alpha, built.new_alpha, built.beta]
    with pytest.raises(VerificationError, match=message):
        verify_bundle(bundles, ca_pem=built.federation.ca_pem, require_published=True)
