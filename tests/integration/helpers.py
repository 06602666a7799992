"""Helpers for integration tests: run the real ``fednode`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def fednode(
    *args: str | Path, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real ``fednode`` CLI and capture its output."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"fednode {' '.join(map(str, args))} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def status(home: Path) -> dict[str, Any]:
    result = fednode("status", "--json", "--home", home, check=True)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed
