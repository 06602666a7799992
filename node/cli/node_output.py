"""Telling the operator when a file the node wrote is not where their shell looks.

``share fetch --out`` and ``ledger export --out`` are written by the node
process, not by the command. Under the shipped systemd unit the node has its
own ``/tmp`` and sees most of the file system read-only, so a path that is
fine for the command's shell can land somewhere the operator never sees (a
private ``/tmp``) or be refused as not writable. The command checks, after
the node reports success, that the path exists from its own view, and says
why it may not.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SANDBOX_HINT", "warn_if_unseen"]

#: Where a sandboxed node may write, for hints.
SANDBOX_HINT = (
    "the node writes the file itself: give a path the node may write, such as "
    "/var/lib/fednode/exports/ under the shipped systemd unit (see its ReadWritePaths)"
)


def warn_if_unseen(path: Path) -> bool:
    """Warn on stderr when ``path``, which the node reports written, is not visible here.

    Returns True when the path is visible.
    """
    if path.exists():
        return True
    print(
        f"warning: the node wrote {path}, but this shell does not see it: the node runs "
        f"with its own view of the file system (a private /tmp under systemd, or another "
        f"container); {SANDBOX_HINT}",
        file=sys.stderr,
    )
    return False
