"""``fednode demo`` end to end: it succeeds, reports what moved, and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _serving(workdir: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [
        line for line in listing.stdout.splitlines() if "serve" in line and str(workdir) in line
    ]


def test_demo_runs_the_whole_federation_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "What moved" in out and "What stayed local" in out
    assert "refused" in out
    assert "verified offline" in out and "shares cross-checked" in out
    assert "no process left behind" in out
    assert (workdir / "shares").is_dir()
    assert sorted(p.name for p in (workdir / "audit").iterdir())
    assert _serving(workdir) == []


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "was not made by 'fednode demo'" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
