"""Names shared by the bundle writer and the offline verifier (see ``ledger/FORMAT.md``)."""

from __future__ import annotations

__all__ = ["BUNDLE_TYPE", "BUNDLE_VERSION", "checkpoint_name"]

BUNDLE_VERSION = 1
BUNDLE_TYPE = "fednode.ledger-bundle"


def checkpoint_name(size: int) -> str:
    """Return the bundle file name of the checkpoint of ``size``."""
    return f"checkpoints/{size:012d}.note"
