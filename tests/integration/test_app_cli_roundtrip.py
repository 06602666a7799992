"""The real ``fednode app`` commands in a subprocess on an 80-column terminal:
build once, approve, list whole digests, revoke by the printed digest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from node.cli import exit_codes

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "seeds" / "apps" / "traffic-risk"


def _fednode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )


def test_build_approve_list_revoke_at_80_columns(tmp_path: Path) -> None:
    home = tmp_path / "traffic"
    init = _fednode("init", "--home", home, "--federation", "city", "--department", "traffic")
    assert init.returncode == 0, init.stderr
    fab = tmp_path / "traffic-risk.fab"
    built = _fednode("app", "build", APP, "--out", fab)
    assert built.returncode == 0, built.stderr
    again = _fednode("app", "build", APP, "--out", fab)
    assert again.returncode == exit_codes.USAGE
    assert f"{fab} already exists" in again.stderr and "--overwrite" in again.stderr

    assert _fednode("app", "approve", fab, "--home", home).returncode == 0
    listing = _fednode("app", "list", "--home", home)
    assert listing.returncode == 0, listing.stderr
    digests = re.findall(r"sha256:[0-9a-f]{64}\b", listing.stdout)
    assert digests == re.findall(r"sha256:[0-9a-f]{64}", built.stdout), listing.stdout

    assert _fednode("app", "revoke", digests[0], "--home", home).returncode == 0
    twice = _fednode("app", "revoke", digests[0], "--home", home)
    assert twice.returncode == exit_codes.USAGE
    assert "is not on this node's approved list" in twice.stderr
    assert "hint: run 'fednode app list'" in twice.stderr
