"""``fednode dataset add`` shows a percentage and time left on a terminal, and nothing else
anywhere else: not in a pipe or log, and not with ``--json``."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from node.catalog import admin as catalog_admin
from node.cli import dataset
from node.cli.dataset import read_progress

RESULT: dict[str, Any] = {
    "name": "census",
    "format": "csv",
    "rows": 7_000_000,
    "path": "/data/census.csv",
    "description": "",
    "columns": [{"name": "district", "type": "string", "label": "internal"}],
}


@pytest.mark.parametrize("width", [80, 100, 119, 120, 160])
def test_bar_percentage_rows_and_time_left_fit_the_terminal(width: int) -> None:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress, task = read_progress(console, "census-2024-extract-with-a-long-name.csv")
    progress.update(task, total=537_662_670, completed=225_000_000, rows=2_929_000)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = [line for line in console.file.getvalue().splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and len(lines[0]) <= width, lines
    line = lines[0]
    assert "42%" in line and "2,929,000 rows" in line and "reading census" in line
    assert "━" in line  # the bar itself
    assert "-:--:--" in line or ":" in line.rsplit("rows", 1)[1]  # time remaining
    assert ("225.0/537.7 MB" in line) == (width >= 120)


def _run(monkeypatch: pytest.MonkeyPatch, *, json_output: bool) -> None:
    def fake_invoke(home: Path, command: str, args: dict[str, Any], on_event: Any = None) -> Any:
        assert command == "dataset.add"
        if on_event is not None:
            on_event(
                {"event": "progress", "rows": 5, "bytes": 50, "total_bytes": 200, "seconds": 1.5}
            )
        return RESULT

    monkeypatch.setattr(dataset, "invoke", fake_invoke)
    args = argparse.Namespace(
        name="census",
        path="census.csv",
        format=None,
        label=[],
        description=None,
        replace=False,
        json=json_output,
        home=Path("home"),
    )
    assert dataset._add(args) == 0


def test_a_terminal_sees_the_percentage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the captured stderr as a terminal
    monkeypatch.setenv("COLUMNS", "100")
    _run(monkeypatch, json_output=False)
    captured = capsys.readouterr()
    assert "25%" in captured.err and "reading census.csv" in captured.err
    assert "census" in captured.out  # the result, after the display is gone


@pytest.mark.parametrize("json_output", [False, True])
def test_a_pipe_or_json_gets_no_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], json_output: bool
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    if json_output:
        monkeypatch.setenv("FORCE_COLOR", "1")  # even on a terminal
    _run(monkeypatch, json_output=json_output)
    captured = capsys.readouterr()
    assert captured.err == ""
    if json_output:
        assert json.loads(captured.out)["rows"] == 7_000_000
    else:
        assert "7,000,000 rows" in captured.out


def test_the_node_streams_rows_and_bytes_of_the_total(
    provider_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_admin, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(catalog_admin, "PROGRESS_EVERY", 0.0)
    path = tmp_path / "census.csv"
    path.write_text("district,count\n" + "".join(f"d{i % 40},{i}\n" for i in range(300_000)))
    events: list[dict[str, Any]] = []
    result = catalog_admin.dataset_add(
        provider_runtime, {"name": "census", "path": str(path)}, events.append
    )
    assert result["rows"] == 300_000 and len(events) >= 3
    size = path.stat().st_size
    assert all(e["event"] == "progress" and e["total_bytes"] == size for e in events)
    assert events[-1]["bytes"] == size and events[-1]["rows"] == 300_000
    assert 0 < events[0]["bytes"] < size
