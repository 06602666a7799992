"""Directory files as key history: ``verify_bundle(..., directories=[...])`` and
``fednode ledger verify --directory FILE``.

An auditor may hold the signed directory that named a department's key before
it enrolled again, without a bundle that carries it. Given as a file, it is
checked exactly as a bundle's directory (under the CA, of the bundles'
federation) and its keys then verify what that key signed: receipts and
witness claims. It never sets a laxer witness policy than the newest
directory, and a key it names does not vouch for a receipt made after the
department's log under a later key began.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bundle import export_bundle
from ledger.canonical import dumps, loads
from ledger.errors import VerificationError
from ledger.verify import DirectoryFileError, DirectoryReport, verify_bundle
from node.cli.main import main
from tests.unit.ledger.helpers import FEDERATION, Federation, fill, make_ca, make_directory
from tests.unit.ledger.reenrolment import NEW_SERIAL, OLD_SERIAL, Rekeyed

# -- a receipt and witness claims under a department's earlier key ---------------------


def _old_directory_file(built: Rekeyed, tmp_path: Path) -> Path:
    """The directory of alpha's first key, as the auditor keeps it: a file of its own."""
    path = tmp_path / f"directory-serial-{OLD_SERIAL}.json"
    path.write_bytes((built.old_alpha / "directory.json").read_bytes())
    return path


def _beta_shares_with_old_alpha(federation: Federation, _: Ed25519PrivateKey) -> None:
    federation.share("beta", "alpha")  # the receipt is signed by alpha's first key


def test_a_receipt_under_the_old_key_verifies_with_the_old_directory_file(
    build: Callable[..., Rekeyed], tmp_path: Path
) -> None:
    built = build(before=_beta_shares_with_old_alpha)
    bundles, ca = [built.new_alpha, built.beta], built.federation.ca_pem
    with pytest.raises(
        VerificationError,
        match=r"beta: entry seq \d+: receipt for share \w+ is not signed by alpha under any "
        r"of its 1 key\(s\).*or give that directory file",
    ):
        verify_bundle(bundles, ca_pem=ca)

    old = _old_directory_file(built, tmp_path)
    report = verify_bundle(bundles, ca_pem=ca, directories=[old])
    assert report.directories == [DirectoryReport(old, FEDERATION, OLD_SERIAL, 1)]
    # Checked under the old key; alpha's old log (its receiving side) is not given.
    assert report.shares_unmatched_peers == 1
    assert (report.policy_serial, report.policy_threshold) == (NEW_SERIAL, 1)


def test_witness_claims_about_the_old_log_are_checked_with_the_old_directory_file(
    rekeyed: Rekeyed, tmp_path: Path
) -> None:
    ca = rekeyed.federation.ca_pem
    without = verify_bundle([rekeyed.beta], ca_pem=ca)
    assert any("keys the directory no longer names" in note for note in without.notes)
    old = _old_directory_file(rekeyed, tmp_path)
    with_file = verify_bundle([rekeyed.beta], ca_pem=ca, directories=[old])
    assert not any("no longer names" in note for note in with_file.notes)
    # ... and bound to the old log: with its bundle, they are checked against its entries.
    both = verify_bundle([rekeyed.beta, rekeyed.old_alpha], ca_pem=ca, directories=[old])
    assert both.witnessed_checked > 0 and both.bundles[1].witnessed_size == 16


def _old_key_signs_after_reenrolment(skew_ms: int) -> Callable[..., None]:
    """beta records a share whose receipt alpha's replaced key signed, ``skew_ms``
    after alpha's new log began; alpha's new node never received it."""

    def record(federation: Federation, old_key: Ed25519PrivateKey) -> None:
        federation.skew_ms = skew_ms
        federation.keys["holder"] = old_key
        federation.share("beta", "alpha", receipt_signer="holder", receiver_records=False)
        del federation.keys["holder"]

    return record


@pytest.mark.parametrize("with_old_log", [False, True], ids=["new-log", "both-logs"])
@pytest.mark.parametrize("skew_ms", [0, 120_000], ids=["within-skew", "two-minutes-later"])
def test_the_old_key_does_not_vouch_for_a_receipt_after_the_new_log_began(
    build: Callable[..., Rekeyed], tmp_path: Path, skew_ms: int, with_old_log: bool
) -> None:
    built = build(after=_old_key_signs_after_reenrolment(skew_ms))
    old = _old_directory_file(built, tmp_path)
    bundles = [built.new_alpha, built.beta] + ([built.old_alpha] if with_old_log else [])
    ca = built.federation.ca_pem
    if skew_ms:
        with pytest.raises(
            VerificationError,
            match=rf"beta: entry seq \d+: receipt for share \w+ is signed under the key of alpha "
            rf"that directory serial {OLD_SERIAL} names, but alpha's log under a later key "
            rf"\(.*new-alpha, directory serial {NEW_SERIAL}\) began at time \d+, 1[0-9]{{2}} s "
            r"before this entry: a key alpha had replaced signed the receipt",
        ):
            verify_bundle(bundles, ca_pem=ca, directories=[old])
        return
    # Within the slack for clock skew, the receipt may have been signed just before
    # the old node stopped: accepted, as any receipt whose receiving side is unknown.
    report = verify_bundle(bundles, ca_pem=ca, directories=[old])
    assert report.shares_unmatched_peers == (0 if with_old_log else 1)
    if with_old_log:
        assert any("is not yet covered" in note for note in report.notes)


# -- refused directory files ------------------------------------------------------------


def _sign(body: dict[str, object], ca_key: ec.EllipticCurvePrivateKey) -> bytes:
    signature = ca_key.sign(dumps(body), ec.ECDSA(hashes.SHA256()))
    return dumps({"directory": body, "signature": base64.b64encode(signature).decode()})


def _body(directory_json: bytes) -> dict[str, object]:
    outer = loads(directory_json)
    assert isinstance(outer, dict)
    body = outer["directory"]
    assert isinstance(body, dict)
    return body


def _alpha_bundle(federation: Federation, out: Path, *, ca_pem: bytes | None) -> Path:
    store = federation.store("alpha")
    fill(store, 6)
    federation.publish("alpha")
    return export_bundle(
        store, federation.directory_json, out, origin=federation.origin("alpha"), ca_pem=ca_pem
    ).path


def _tampered(fed: Federation) -> bytes:
    outer = loads(fed.directory_json)
    assert isinstance(outer, dict)
    outer["directory"]["witness_threshold"] = 1  # the CA signed 2
    return dumps(outer)


def _other_federation(fed: Federation) -> bytes:
    return _sign({**_body(fed.directory_json), "federation": "otherfed"}, fed.ca_key)


def _same_serial_other_terms(fed: Federation) -> bytes:
    return _sign({**_body(fed.directory_json), "witness_threshold": 1}, fed.ca_key)


def _other_ca(fed: Federation) -> bytes:
    other_key, _ = make_ca()
    return make_directory(
        other_key, {d: k.public_key() for d, k in fed.keys.items()}, set(fed.departments), 1
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_tampered, "directory signature does not verify under the CA"),
        (lambda fed: fed.directory_json[:-9], "directory is not canonical JSON"),
        (lambda fed: b"", "directory is not canonical JSON"),
        (_other_ca, "directory signature does not verify under the CA"),
        (
            _other_federation,
            f"directory is for federation 'otherfed', the bundles are of '{FEDERATION}'",
        ),
        (
            _same_serial_other_terms,
            "serial 1 differs from another bundle's directory with the same serial; "
            "one of them is not the federation's",
        ),
    ],
    ids=["tampered", "truncated", "empty", "other-ca", "other-federation", "same-serial"],
)
def test_a_directory_file_that_is_not_the_federations_is_refused_naming_it(
    federation: Federation,
    tmp_path: Path,
    make: Callable[[Federation], bytes],
    message: str,
) -> None:
    bundle = _alpha_bundle(federation, tmp_path / "alpha-bundle", ca_pem=federation.ca_pem)
    good = tmp_path / "good.json"
    good.write_bytes(federation.directory_json)
    bad = tmp_path / "given.json"
    bad.write_bytes(make(federation))
    with pytest.raises(DirectoryFileError, match=f"^{re.escape(f'{bad}: {message}')}"):
        verify_bundle([bundle], ca_pem=federation.ca_pem, directories=[good, bad])
    # The same check without the auditor's CA: under the CA the bundles carry.
    with pytest.raises(DirectoryFileError, match=re.escape(f"{bad}: {message}")):
        verify_bundle([bundle], directories=[bad])


def test_two_directory_files_with_one_serial_must_agree(
    federation: Federation, tmp_path: Path
) -> None:
    bundle = _alpha_bundle(federation, tmp_path / "alpha-bundle", ca_pem=federation.ca_pem)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    body = {**_body(federation.directory_json), "serial": 0}
    first.write_bytes(_sign(body, federation.ca_key))
    second.write_bytes(_sign({**body, "witness_threshold": 0}, federation.ca_key))
    with pytest.raises(
        DirectoryFileError,
        match=re.escape(f"{second}: serial 0 differs from directory file {first} with the same"),
    ):
        verify_bundle([bundle], ca_pem=federation.ca_pem, directories=[first, second])


def test_a_missing_file_and_one_no_ca_can_check_are_refused(
    federation: Federation, tmp_path: Path
) -> None:
    bundle = _alpha_bundle(federation, tmp_path / "alpha-bundle", ca_pem=None)
    missing = tmp_path / "missing.json"
    with pytest.raises(DirectoryFileError, match=re.escape(f"{missing}: cannot read directory")):
        verify_bundle([bundle], ca_pem=federation.ca_pem, directories=[missing])
    given = tmp_path / "given.json"
    given.write_bytes(federation.directory_json)
    # The bundle carries no ca.pem and the auditor gave no CA: nothing can check the file.
    with pytest.raises(DirectoryFileError, match=re.escape(f"{given}: no CA to check")):
        verify_bundle([bundle], directories=[given])
    report = verify_bundle([bundle], ca_pem=federation.ca_pem, directories=[given])
    assert report.directories == [DirectoryReport(given, FEDERATION, 1, 2)]


# -- the witness policy still comes from the newest directory ---------------------------


def _policy_bundles(tmp_path: Path) -> tuple[Federation, Path, Path]:
    """alpha's bundle carries directory serial 2 (threshold 1) and a checkpoint only beta
    cosigned; beta's carries serial 3 (threshold 2), its checkpoint cosigned by both."""
    fed = Federation(tmp_path / "fed", threshold=1)
    keys = {d: k.public_key() for d, k in fed.keys.items()}
    fed.directory_json = make_directory(fed.ca_key, keys, set(fed.departments), 1, serial=2)
    alpha = fed.store("alpha")
    fill(alpha, 5)
    cp = alpha.sign_checkpoint(fed.origin("alpha"), fed.keys["alpha"])
    alpha.add_cosignatures(cp.size, [fed.witnesses["beta"].add_checkpoint(0, [], cp.note)])
    alpha_bundle = export_bundle(
        alpha, fed.directory_json, tmp_path / "alpha", origin=fed.origin("alpha"), ca_pem=fed.ca_pem
    ).path
    fed.directory_json = make_directory(fed.ca_key, keys, set(fed.departments), 2, serial=3)
    fill(fed.store("beta"), 3)
    fed.publish("beta")
    beta_bundle = export_bundle(
        fed.store("beta"),
        fed.directory_json,
        tmp_path / "beta",
        origin=fed.origin("beta"),
        ca_pem=fed.ca_pem,
    ).path
    return fed, alpha_bundle, beta_bundle


def test_an_older_directory_file_with_a_lower_threshold_does_not_change_the_policy(
    tmp_path: Path,
) -> None:
    fed, alpha, beta = _policy_bundles(tmp_path)
    try:
        keys = {d: k.public_key() for d, k in fed.keys.items()}
        lax = tmp_path / "directory-serial-1.json"
        lax.write_bytes(make_directory(fed.ca_key, keys, set(), 0, serial=1))  # no witnesses
        report = verify_bundle([alpha, beta], ca_pem=fed.ca_pem, directories=[lax])
        assert report.directories == [DirectoryReport(lax, FEDERATION, 1, 0)]
        assert (report.policy_serial, report.policy_threshold) == (3, 2)
        assert report.bundles[0].published_size == 0  # one cosignature; serial 3 asks for two
        with pytest.raises(VerificationError, match=r"alpha: entries 0..4 are covered by no"):
            verify_bundle(
                [alpha, beta], ca_pem=fed.ca_pem, directories=[lax], require_published=True
            )
    finally:
        fed.close()


def test_a_newer_directory_file_sets_the_policy(tmp_path: Path) -> None:
    fed, alpha, _ = _policy_bundles(tmp_path)
    try:
        alone = verify_bundle([alpha], ca_pem=fed.ca_pem)
        assert (alone.policy_serial, alone.policy_threshold) == (2, 1)
        assert alone.bundles[0].published_size == 5
        newer = tmp_path / "directory-serial-3.json"
        newer.write_bytes((tmp_path / "beta" / "directory.json").read_bytes())
        report = verify_bundle([alpha], ca_pem=fed.ca_pem, directories=[newer])
        assert (report.policy_serial, report.policy_threshold) == (3, 2)
        assert report.bundles[0].published_size == 0
    finally:
        fed.close()


# -- the command line ---------------------------------------------------------------------


def test_help_explains_directory_files_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ledger", "verify", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--directory FILE" in out
    assert "as key history" in out
    assert "the witness policy still comes from the newest directory" in out
    assert "--directory directory-serial-1.json traffic.zip security.zip" in out


@pytest.fixture
def auditor_files(federation: Federation, tmp_path: Path) -> tuple[Path, Path, Path]:
    """alpha's bundle, the federation CA and the directory file, as the auditor holds them."""
    ca = tmp_path / "federation-ca.pem"
    ca.write_bytes(federation.ca_pem)
    directory = tmp_path / "directory-serial-1.json"
    directory.write_bytes(federation.directory_json)
    return (
        _alpha_bundle(federation, tmp_path / "alpha.zip", ca_pem=federation.ca_pem),
        ca,
        directory,
    )


def test_cli_prints_the_directory_files_it_loaded(
    auditor_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, ca, directory = auditor_files
    argv = ["ledger", "verify", "--ca", str(ca), "--directory", str(directory), str(bundle)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"directory {directory}: serial 1, federation {FEDERATION}, witness threshold 2" in out
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["directories"] == [
        {"path": str(directory), "federation": FEDERATION, "serial": 1, "witness_threshold": 2}
    ]


def test_cli_refuses_a_forged_directory_file_with_exit_7_and_a_missing_one_with_2(
    auditor_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle, ca, _ = auditor_files
    forged = tmp_path / "forged.json"
    other_key, _ = make_ca()
    forged.write_bytes(
        make_directory(other_key, {"alpha": Ed25519PrivateKey.generate().public_key()}, set(), 0)
    )
    assert main(["ledger", "verify", "--ca", str(ca), "--directory", str(forged), str(bundle)]) == 7
    err = capsys.readouterr().err.splitlines()
    assert f"{forged}: directory signature does not verify under the CA" in err[0]
    assert err[1].startswith("hint: give the federation's own signed directory file")
    missing = tmp_path / "missing.json"
    assert (
        main(["ledger", "verify", "--ca", str(ca), "--directory", str(missing), str(bundle)]) == 2
    )
    assert f"--directory: no such file (or not a file): {missing}" in capsys.readouterr().err
