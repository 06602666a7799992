"""``fednode ledger show`` on narrow terminals: what an operator needs stays readable."""

from __future__ import annotations

from typing import Any

import pytest

from node.cli import ledger as ledger_cli
from node.cli.main import main

ENTRIES = [
    {
        "seq": 123456, "time": 1795894064000, "event": event, "actor": "operator",
        "peer": "public-security", "dataset": "road_safety", "outcome": outcome,
        "detail": {"share_id": "ab" * 16, "rows": 1},
    }
    for event, outcome in (("share.sent", "ok"), ("access.denied", "denied"))
]  # fmt: skip


@pytest.mark.parametrize("columns", [80, 100])
def test_seq_event_outcome_and_peer_stay_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: int
) -> None:
    def invoke(home: Any, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        return {"size": 123457, "entries": ENTRIES}

    monkeypatch.setattr(ledger_cli, "invoke", invoke)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["ledger", "show"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= columns
    for event, outcome in (("share.sent", "ok"), ("access.denied", "denied")):
        [row] = [line for line in lines if event in line]
        # The seq that 'ledger prove' and 'ledger erase' take, whole.
        assert "123456" in row and outcome in row
        assert "operator / publ" in row
