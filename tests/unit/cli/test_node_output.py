"""A file the node reports written but the operator's shell cannot see gets a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import node.cli.ledger as ledger_cli
import node.cli.share as share_cli
from node.cli.main import main
from node.cli.node_output import warn_if_unseen


def test_a_visible_output_is_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "visits.parquet"
    out.write_bytes(b"x")
    assert warn_if_unseen(out) is True
    assert capsys.readouterr().err == ""


def test_an_unseen_output_names_the_path_and_where_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "private-tmp" / "visits.parquet"
    assert warn_if_unseen(out) is False
    err = capsys.readouterr().err
    assert f"the node wrote {out}, but this shell does not see it" in err
    assert "/var/lib/fednode/exports/" in err


def _fake_invoke(result: dict[str, Any]) -> Any:
    def invoke(home: Path, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        return result

    return invoke


def test_share_fetch_warns_when_the_node_wrote_where_the_shell_cannot_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unseen = tmp_path / "gone.parquet"
    result = {
        "rows": 3,
        "chunks": 1,
        "path": str(unseen),
        "bytes": 10,
        "seconds": 0.1,
        "share_id": "00" * 16,
        "digest": "sha256:" + "0" * 64,
        "receipt_acknowledged": True,
    }
    monkeypatch.setattr(share_cli, "invoke", _fake_invoke(result))
    argv = ["share", "fetch", "--from", "health", "--agreement", "agr-1"]
    code = main([*argv, "--out", str(unseen), "--home", str(tmp_path)])
    assert code == 0
    assert "this shell does not see it" in capsys.readouterr().err


def test_ledger_export_warns_when_the_node_wrote_where_the_shell_cannot_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unseen = tmp_path / "audit.zip"
    result = {"path": str(unseen), "entries": 5, "checkpoints": [], "unpublished_checkpoints": []}
    monkeypatch.setattr(ledger_cli, "_invoke", lambda *a, **k: result)
    assert main(["ledger", "export", "--out", str(unseen), "--home", str(tmp_path)]) == 0
    assert "this shell does not see it" in capsys.readouterr().err
