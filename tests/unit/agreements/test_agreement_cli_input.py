"""Command-line mistakes in ``fednode agreement`` are usage errors, caught before any signing.

No node runs in these tests: a command that got as far as calling its node
would fail with exit 8 (admin), so exit 2 proves the check came first and
nothing was signed or activated.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.canonical import dumps
from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.store import AgreementRecord
from node.cli.agreement import MAX_AGREEMENT_FILE, parse_columns, parse_window
from node.cli.exit_codes import USAGE, UsageError
from node.cli.main import main

NOW = 1_800_000_000
PROVIDER = ed25519.Ed25519PrivateKey.generate()


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main(["agreement", *map(str, args)])
    return code, capsys.readouterr().err


def create(tmp_path: Path, *extra: str) -> list[str | Path]:
    return [
        "create", "--home", tmp_path / "home", "--consumer", "statistics", "--dataset", "visits",
        "--purpose-code", "STAT-7", "--mode", "transfer", "--out", tmp_path / "v.agreement",
        *extra,
    ]  # fmt: skip


def signed_file(path: Path, *, valid_until: int | None = None) -> Path:
    now = int(time.time())
    doc = new_agreement(
        federation="gov", provider="health", consumer="statistics", dataset="visits",
        purpose_code="STAT-7", purpose_text="", valid_from=now - 10,
        valid_until=now + 3600 if valid_until is None else valid_until, modes=["transfer"],
        columns={"district": {"treatment": "plain"}}, created=now - 10,
    )  # fmt: skip
    path.write_bytes(SignedAgreement.sign(doc, PROVIDER).to_bytes())
    return path


# --- agreement create --------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--valid-until", "+90d", "--column", "accident_id=pseudonymize",
             "--column", "accident_id=plain"],
            "column 'accident_id' is named twice",
        ),
        (["--valid-until", "tomorrow", "--column", "a=plain"], "cannot read time 'tomorrow'"),
        (
            ["--valid-until", "2025-01-01", "--column", "a=plain"],
            "2025-01-01 is in the past; use a later date or +90d",
        ),
        (
            ["--valid-from", "+10d", "--valid-until", "+5d", "--column", "a=plain"],
            "--valid-until +5d is not after --valid-from +10d",
        ),
        (["--valid-until", "+90d", "--column", "severity"], "is not NAME=TREATMENT"),
        (["--valid-until", "+90d", "--column", "age=generalize:band"], "is not KEY=VALUE"),
    ],
)  # fmt: skip
def test_create_input_mistakes_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, err = run(capsys, *create(tmp_path, *extra))
    assert code == USAGE, err
    assert message in err
    assert not (tmp_path / "v.agreement").exists()


def test_parse_columns_keeps_one_treatment_per_column() -> None:
    assert parse_columns(["a=plain", "b=drop"]) == {
        "a": {"treatment": "plain", "params": {}},
        "b": {"treatment": "drop", "params": {}},
    }
    with pytest.raises(UsageError, match="column 'a' is named twice"):
        parse_columns(["a=plain", "b=drop", "a=pseudonymize"])


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        (None, str(NOW), "is in the past"),
        (None, "+0s", "is in the past"),
        (None, "2020-06-01T00:00", "2020-06-01T00:00 is in the past"),
        ("+2d", "+1d", "is not after --valid-from"),
        ("+1d", "+1d", "is not after --valid-from"),
        (None, "next week", "cannot read time"),
    ],
)
def test_parse_window_refuses(start: str | None, end: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_window(start, end, now=NOW)


def test_parse_window_accepts_a_future_end() -> None:
    assert parse_window(None, "+90d", now=NOW) == (None, NOW + 90 * 86400)
    assert parse_window("+1d", "+2d", now=NOW) == (NOW + 86400, NOW + 2 * 86400)


# --- agreement countersign and import ----------------------------------------


def test_countersign_refuses_an_out_it_cannot_write_before_signing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = signed_file(tmp_path / "v.agreement")
    original = file.read_bytes()
    home = tmp_path / "home"
    code, err = run(
        capsys, "countersign", file, "--out", tmp_path / "nosuch" / "x.agreement", "--push",
        "--home", home,
    )  # fmt: skip
    assert code == USAGE and "does not exist" in err
    taken = tmp_path / "taken.agreement"
    taken.write_bytes(b"keep")
    code, err = run(capsys, "countersign", file, "--out", taken, "--home", home)
    assert code == USAGE and "already exists" in err and "--overwrite" in err
    assert taken.read_bytes() == b"keep" and file.read_bytes() == original
    # With --overwrite the path is accepted and the command goes on to the node (none here).
    code, err = run(capsys, "countersign", file, "--out", taken, "--overwrite", "--home", home)
    assert code == 8, err


@pytest.mark.parametrize("command", ["countersign", "import"])
def test_a_file_that_is_not_an_agreement_is_refused_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    big = tmp_path / "big.parquet"
    with big.open("wb") as f:
        f.write(b"PAR1")
        f.truncate(MAX_AGREEMENT_FILE * 8)
    small = tmp_path / "notes.txt"
    small.write_text("meeting notes\n")
    json_other = tmp_path / "other.json"
    json_other.write_bytes(dumps({"a": 1}))
    cases = [
        (tmp_path / "missing.agreement", USAGE, "does not exist"),
        (tmp_path, USAGE, "is a directory"),
        (big, USAGE, "is not an agreement file: 8,388,608 bytes"),
        (small, USAGE, "is not an agreement file"),
        (json_other, USAGE, "is not an agreement file"),
    ]
    for path, expected, message in cases:
        code, err = run(capsys, command, path, "--home", tmp_path / "home")
        assert (code, message in err) == (expected, True), (path, err)
        assert "RESOURCE_EXHAUSTED" not in err and "Rendezvous" not in err


def test_a_malformed_agreement_is_refused_locally_as_a_policy_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "v.agreement"
    body = SignedAgreement.from_bytes(signed_file(file).read_bytes()).to_json()
    body["agreement"]["modes"] = ["teleport"]
    file.write_bytes(dumps(body))
    code, err = run(capsys, "countersign", file, "--home", tmp_path / "home")
    assert code == 6 and "agreement is malformed: modes" in err


# --- expired is shown, not stored ---------------------------------------------


def test_an_unrevoked_agreement_past_its_window_is_shown_expired(tmp_path: Path) -> None:
    signed = SignedAgreement.from_bytes(signed_file(tmp_path / "v.agreement").read_bytes())
    until = signed.valid_until
    for stored in ("proposed", "active"):
        record = AgreementRecord(signed, stored, None, until - 100, None, None)
        assert record.state_at(until - 1) == stored
        assert record.to_json(until - 1)["expired_at"] is None
        assert record.state_at(until) == "expired"
        shown = record.to_json(until + 5)
        assert shown["state"] == "expired" and str(shown["expired_at"]).endswith(" UTC")
        assert record.state == stored  # nothing rewritten
    revoked = AgreementRecord(signed, "revoked", None, until, until - 50, "ended")
    assert revoked.state_at(until + 5) == "revoked"
