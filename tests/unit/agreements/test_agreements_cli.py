"""Parsing of the agreement CLI's time and column arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.cli.agreement import parse_column, parse_time
from node.cli.exit_codes import UsageError

NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+90d", NOW + 90 * 86400),
        ("+12h", NOW + 12 * 3600),
        ("+30m", NOW + 1800),
        ("+45s", NOW + 45),
        ("1800000000", 1_800_000_000),
        ("2026-12-31", 1_798_675_200),
        ("2026-12-31T18:00:00+01:00", 1_798_736_400),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


def test_parse_time_refuses_garbage() -> None:
    with pytest.raises(UsageError, match="cannot read time 'soon'"):
        parse_time("soon", now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("district=plain", ("district", {"treatment": "plain", "params": {}})),
        ("age=generalize:band=10", ("age", {"treatment": "generalize", "params": {"band": 10}})),
        (
            "seen=generalize:to=hour",
            ("seen", {"treatment": "generalize", "params": {"to": "hour"}}),
        ),
        ("id=pseudonymize", ("id", {"treatment": "pseudonymize", "params": {}})),
    ],
)
def test_parse_column(text: str, expected: tuple[str, dict[str, Any]]) -> None:
    assert parse_column(text) == expected


@pytest.mark.parametrize("text", ["district", "=plain", "age=generalize:band"])
def test_parse_column_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--column"):
        parse_column(text)


def test_create_refuses_an_out_it_could_not_write_before_anything_is_signed(
    tmp_path: Path,
) -> None:
    # No node runs in this home: the check comes first, so the error is about --out.
    for out, message in ((tmp_path / "missing" / "a.agreement", "does not exist"),
                         (tmp_path / "taken.agreement", "already exists")):  # fmt: skip
        (tmp_path / "taken.agreement").write_bytes(b"{}")
        done = subprocess.run(
            [sys.executable, "-m", "node.cli.main", "agreement", "create",
             "--home", str(tmp_path / "home"), "--consumer", "statistics", "--dataset", "d",
             "--purpose-code", "P", "--valid-until", "+1d", "--mode", "transfer",
             "--column", "a=plain", "--out", str(out)],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
    assert (tmp_path / "taken.agreement").read_bytes() == b"{}"
