"""``fednode dataset``: add shows a percentage and time left on a terminal and nothing in a
pipe, a log or with ``--json``; every option explains itself and refusals say what to do."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from node.catalog import admin as catalog_admin
from node.catalog.registry import Catalog
from node.cli import dataset
from node.cli.dataset import read_progress
from node.cli.main import build_parser, main
from node.errors import CatalogError

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


# --- what an operator reads ----------------------------------------------------


def _dataset_commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [groups] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [
        a for a in groups.choices["dataset"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return dict(commands.choices)


@pytest.mark.parametrize("command", ["add", "list", "show"])
def test_every_dataset_argument_has_help_and_every_command_an_example(command: str) -> None:
    parser = _dataset_commands()[command]
    silent = [
        a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert silent == []
    description = parser.description or ""
    assert "example" in description
    # Wrapped by hand: the help formatter keeps lines as written.
    assert max(len(line) for line in description.splitlines()) <= 90


def test_add_help_says_the_node_reads_the_path_and_how_to_add_csv_directories() -> None:
    text = " ".join(_dataset_commands()["add"].format_help().split())
    assert "The node reads PATH itself" in text and "--format csv for a directory" in text


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (["age"], "--label 'age' is not COLUMN=LABEL"),
        (["=public"], "is not COLUMN=LABEL"),
        (["age=public", "age=personal"], "column 'age' is given two labels"),
    ],
)
def test_a_malformed_label_is_a_usage_error_before_the_node_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: list[str], match: str
) -> None:
    flags = [arg for label in labels for arg in ("--label", label)]
    # No node runs in this home: reaching it would exit 8.
    code = main(["dataset", "add", "v", str(tmp_path / "v.csv"), *flags, "--home", str(tmp_path)])
    assert code == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "path", "match", "hint"),
    [
        ("-v", None, "is not valid", "starting with a letter or digit"),
        ("v", "missing.csv", "missing.csv does not exist", "'fednode serve' can read it"),
        ("taken", "v.csv", "is already registered", "pass --replace to register its new data"),
    ],
)
def test_catalog_refusals_say_what_to_do(
    tmp_path: Path, name: str, path: str | None, match: str, hint: str
) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    data = tmp_path / "v.csv"
    data.write_text("a\n1\n")
    catalog.add("taken", data)
    with pytest.raises(CatalogError, match=match) as refused:
        catalog.add(name, tmp_path / (path or "v.csv"))
    assert hint in (refused.value.hint or "")
