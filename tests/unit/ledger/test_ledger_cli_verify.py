"""``fednode ledger verify``: trust comes from the auditor's --ca, never silently from a bundle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ledger.bundle import export_bundle
from node.cli.main import main
from tests.unit.ledger.helpers import Federation, fill


def _bundle(fed: Federation, out: Path) -> Path:
    store = fed.store("alpha")
    fill(store, 12)
    fed.publish("alpha")
    export_bundle(store, fed.directory_json, out, origin=fed.origin("alpha"), ca_pem=fed.ca_pem)
    return out


@pytest.fixture
def genuine(federation: Federation, tmp_path: Path) -> tuple[Path, Path]:
    """A bundle of the federation and the federation's CA certificate, as the auditor holds it."""
    ca = tmp_path / "federation-ca.pem"
    ca.write_bytes(federation.ca_pem)
    return _bundle(federation, tmp_path / "alpha.zip"), ca


@pytest.fixture
def forged(tmp_path: Path) -> Path:
    """The same department keys, but a directory signed by a CA the forger made."""
    fed = Federation(tmp_path / "forger")
    try:
        return _bundle(fed, tmp_path / "forged.zip")
    finally:
        fed.close()


def test_forged_bundle_fails_against_the_federation_ca(
    genuine: tuple[Path, Path], forged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ca = genuine
    assert main(["ledger", "verify", "--ca", str(ca), str(forged)]) == 7
    err = capsys.readouterr().err
    assert "directory signature does not verify" in err
    assert "hint:" in err


def test_genuine_bundle_passes_with_ca(
    genuine: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, ca = genuine
    assert main(["ledger", "verify", "--ca", str(ca), "--json", str(bundle)]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ca"] == {"source": "file", "path": str(ca)}
    assert report["bundles"][0]["directory_signature_checked"] is True
    assert "WARNING" not in out.err


def test_without_ca_is_a_usage_error_that_explains(
    forged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "verify", str(forged)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fednode: error: verify needs --ca FILE")
    assert "anyone can make a CA" in err[0]
    assert err[1].startswith("hint: pass --ca FILE")


def test_trust_bundle_ca_warns_loudly(forged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify", "--trust-bundle-ca", "--json", str(forged)]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("WARNING: ")
    assert "not verified against a CA you trust" in out.err
    report = json.loads(out.out)
    assert report["ca"]["source"] == "bundle"
    assert "not verified against a CA you trust" in report["ca"]["warning"]


def test_ca_and_trust_bundle_ca_exclude_each_other(
    genuine: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, ca = genuine
    with pytest.raises(SystemExit) as exit_info:
        main(["ledger", "verify", "--ca", str(ca), "--trust-bundle-ca", str(bundle)])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, r"--ca .*/missing\.pem: no such file"),
        (lambda p: (p.mkdir(), p)[1], r"--ca .*/missing\.pem is a directory, not a certificate"),
        (
            lambda p: (p.write_text("not a certificate\n"), p)[1],
            r"--ca .*/missing\.pem is not a PEM certificate",
        ),
    ],
    ids=["missing", "directory", "not-a-certificate"],
)
def test_bad_ca_file_is_one_usage_line(
    genuine: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    message: str,
) -> None:
    bundle, _ = genuine
    ca = make(tmp_path / "missing.pem")  # type: ignore[operator]
    assert main(["ledger", "verify", "--ca", str(ca), str(bundle)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fednode: error: ")
    assert re.search(message, err[0]), err[0]
    assert "directory signature" not in err[0]
    assert err[1].startswith("hint: ")


def test_help_shows_ca_and_says_home_is_unused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ledger", "verify", "--help"])
    text = capsys.readouterr().out
    assert "fednode ledger verify --ca federation-ca.pem health.zip" in text
    assert "--trust-bundle-ca" in text
    assert "not used: verify needs no node" in text


def test_require_published_fails_on_an_unpublished_tail(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "federation-ca.pem"
    ca.write_bytes(federation.ca_pem)
    store = federation.store("alpha")
    fill(store, 12)
    federation.publish("alpha")
    fill(store, 3, 12)  # after the last checkpoint: chained, not yet witnessed
    out = tmp_path / "alpha.zip"
    export_bundle(store, federation.directory_json, out, origin=federation.origin("alpha"),
                  ca_pem=federation.ca_pem)  # fmt: skip
    assert main(["ledger", "verify", "--ca", str(ca), str(out)]) == 0
    told = capsys.readouterr().out
    assert "3 entries after the last published checkpoint are chained only" in told
    assert main(["ledger", "verify", "--ca", str(ca), "--require-published", str(out)]) == 7
    assert "entries 12..14 are covered by no published checkpoint" in capsys.readouterr().err


def test_a_mistyped_bundle_path_is_a_usage_error(
    genuine: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ca = genuine
    assert main(["ledger", "verify", "--ca", str(ca), str(tmp_path / "typo.zip")]) == 2
    assert "no such bundle" in capsys.readouterr().err


def test_verify_prints_each_directory_serial_and_threshold_and_honours_a_minimum(
    genuine: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, ca = genuine
    assert main(["ledger", "verify", "--ca", str(ca), str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "directory serial 1, witness threshold 2" in out
    assert "witness policy: directory serial 1, witness threshold 2" in out
    assert main(["ledger", "verify", "--ca", str(ca), "--json", str(bundle)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bundles"][0]["directory_serial"] == 1
    assert report["bundles"][0]["directory_witness_threshold"] == 2
    assert report["witness_policy"] == {"directory_serial": 1, "witness_threshold": 2}
    args = ["ledger", "verify", "--ca", str(ca), "--min-directory-serial", "2", str(bundle)]
    assert main(args) == 7
    assert "serial 1 is older than the oldest accepted, 2" in capsys.readouterr().err
