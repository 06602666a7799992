"""The share progress display fits the terminal and keeps what an operator watches."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from node.cli.share import share_progress


@pytest.mark.parametrize("width", [80, 100, 119, 120, 160])
def test_bar_rows_rate_and_time_left_fit_the_terminal(width: int) -> None:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress, task = share_progress(console, "public-security -> accidents-2026.parquet")
    progress.update(task, total=3_000_000, completed=458_752, rows=458_752, mb=19.8, rate=3.5)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = [line for line in console.file.getvalue().splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and len(lines[0]) <= width, lines
    line = lines[0]
    assert "15%" in line and "458,752 rows" in line and "3.5 MB/s" in line
    assert "━" in line  # the bar itself
    assert "-:--:--" in line or ":" in line.rsplit("MB/s", 1)[1]  # time remaining
    assert ("19.8 MB " in line) == (width >= 120)
