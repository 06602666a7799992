"""Checking an output path before the work whose result it will hold."""

from __future__ import annotations

import os
from pathlib import Path

from node.errors import OutputError

__all__ = ["check_output"]


def check_output(dest: Path, *, overwrite: bool = False, overwrite_flag: str | None = None) -> None:
    """Refuse an output path that cannot take a new file, before anything is done.

    ``overwrite_flag`` names the option that allows replacing an existing
    file, for the hint; without one, existing files are never replaced.

    Raises:
        OutputError: ``dest`` exists (without ``overwrite``) or is a directory,
            or its directory is missing or not writable.
    """
    if dest.is_dir():
        raise OutputError(
            f"{dest} is a directory", hint="give a file name, such as DIR/data.parquet"
        )
    if dest.exists() and not overwrite:
        remedy = f", or pass {overwrite_flag}" if overwrite_flag else ""
        raise OutputError(f"{dest} already exists", hint=f"choose a new path or remove it{remedy}")
    if not dest.parent.is_dir():
        raise OutputError(
            f"output directory {dest.parent} does not exist", hint="create it first (mkdir -p)"
        )
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"output directory {dest.parent} is not writable by this process",
            hint="check its owner and permissions; what a node writes (share and export "
            "outputs) must be writable by the node's account, which under the shipped systemd "
            "unit means below /var/lib/fednode, such as /var/lib/fednode/exports/",
        )
