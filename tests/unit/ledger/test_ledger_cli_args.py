"""Ledger command arguments: bad values are usage errors (exit 2) that say what is accepted.

The admin socket is replaced by a fake with the same ``invoke`` signature, so
these tests pin what the CLI checks itself and how it words node refusals.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ledger.bundle import export_bundle
from ledger.errors import StorageError
from node.cli import ledger as ledger_cli
from node.cli.main import main
from tests.unit.ledger.helpers import Federation, fill


def _no_node(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise AssertionError("the node must not be asked")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["show", "--since", "yesterday"],
            r"'yesterday' is not a time: give a duration .*30m.*ISO",
        ),
        (["show", "--since", "2h30"], r"is not a time"),
        (["show", "--limit", "0"], r"--limit: 0: give at least 1"),
        (["show", "--limit", "-5"], r"--limit: -5: give at least 1"),
        (["show", "--limit", "ten"], r"'ten' is not a whole number"),
        (["prove", "-1"], r"-1: entry numbers \(seq\) start at 0"),
        (["prove", "x"], r"'x' is not a whole number"),
        (["erase", "-3", "actor"], r"entry numbers \(seq\) start at 0"),
    ],
)
def test_bad_values_exit_2_with_accepted_forms(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(ledger_cli, "invoke", _no_node)
    with pytest.raises(SystemExit) as info:
        main(["ledger", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


@pytest.mark.parametrize("since", ["30m", "2h", "7d", "2026-11-28", "2026-11-28T09:00+08:00"])
def test_accepted_since_forms(monkeypatch: pytest.MonkeyPatch, since: str) -> None:
    seen: dict[str, Any] = {}

    def invoke(home: Any, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        seen.update(args)
        return {"size": 0, "entries": []}

    monkeypatch.setattr(ledger_cli, "invoke", invoke)
    assert main(["ledger", "show", "--since", since, "--json"]) == 0
    assert isinstance(seen["since_ms"], int)
    assert seen["limit"] == 50


def _prove_node(size: int) -> Any:
    def invoke(home: Any, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        if command == "ledger.prove":
            raise StorageError(
                f"entry seq {args['seq']} is not covered by the latest published checkpoint "
                "(size 40); run 'fednode ledger checkpoint' first"
            )
        assert command == "ledger.show"
        return {"size": size, "entries": []}

    return invoke


def test_prove_missing_entry_says_it_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ledger_cli, "invoke", _prove_node(57))
    assert main(["ledger", "prove", "99999"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "fednode: error: entry 99999 does not exist: the ledger holds 57 entries (seq 0 to 56)"
    )
    assert err[1].startswith("hint: ")


def test_prove_existing_but_unpublished_entry_keeps_the_checkpoint_advice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ledger_cli, "invoke", _prove_node(57))
    main(["ledger", "prove", "50"])
    assert "run 'fednode ledger checkpoint' first" in capsys.readouterr().err


def test_prove_help_says_it_is_the_operators_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ledger", "prove", "--help"])
    text = capsys.readouterr().out
    assert "For the node operator" in text
    assert "admin socket" in text
    assert "auditor" in text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: (d / "f").write_text("x") and d / "f" / "audit.zip",
            r"is a file, not a directory",
        ),
        (
            lambda d: (d / "f").write_text("x") and d / "f" / "x" / "a",
            r"is a file, not a directory",
        ),
        (lambda d: (d / "old.zip").write_text("x") and d / "old.zip", r"already exists"),
        (lambda d: (d / "old").mkdir() or d / "old", r"already exists"),
    ],
    ids=["parent-is-file", "ancestor-is-file", "existing-file", "existing-directory"],
)
def test_export_unusable_out_exits_2_before_asking_the_node(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make: Any,
    message: str,
) -> None:
    monkeypatch.setattr(ledger_cli, "invoke", _no_node)
    out = make(tmp_path)
    assert main(["ledger", "export", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert re.search(message, err[0]), err
    assert "Errno" not in err[0]


def test_export_zip_suffix_is_case_insensitive(federation: Federation, tmp_path: Path) -> None:
    store = federation.store("alpha")
    fill(store, 5)
    out = tmp_path / "audit.ZIP"
    export_bundle(store, federation.directory_json, out, origin=federation.origin("alpha"))
    assert out.is_file()
    assert "manifest.json" in zipfile.ZipFile(out).namelist()


def test_export_library_refuses_a_file_as_parent(federation: Federation, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"cannot write bundle .*: Not a directory"):
        export_bundle(
            federation.store("alpha"),
            federation.directory_json,
            tmp_path / "file" / "sub" / "audit.zip",
            origin=federation.origin("alpha"),
        )


def test_show_keeps_event_names_whole_on_an_80_column_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {
        "seq": 12345, "time": 1795894064000, "actor": "operator", "peer": "public-security",
        "dataset": "road_safety", "outcome": "ok", "detail": {"share_id": "ab" * 16, "rows": 1},
    }  # fmt: skip
    entries = [{**entry, "event": e} for e in ("share.sent", "share.received")]

    def invoke(home: Any, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        return {"size": 12346, "entries": entries}

    monkeypatch.setattr(ledger_cli, "invoke", invoke)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["ledger", "show"]) == 0
    out = capsys.readouterr().out
    assert "share.sent" in out and "share.received" in out
    assert "2026-11-28 19:27:44" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_show_with_no_match_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ledger_cli, "invoke", lambda *a, **k: {"size": 322, "entries": []})
    assert main(["ledger", "show", "--type", "nonsense"]) == 0
    assert "no matching entries" in capsys.readouterr().out
