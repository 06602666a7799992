"""Names shared by the bundle writer and the offline verifier (see ``ledger/FORMAT.md``)."""

from __future__ import annotations

__all__ = ["BUNDLE_TYPE", "BUNDLE_VERSION", "CROSS_CHECKED_EVENTS", "checkpoint_name"]

BUNDLE_VERSION = 1
BUNDLE_TYPE = "fednode.ledger-bundle"
#: Events the verifier keeps while it checks entries, to compare bundles with
#: each other: both sides of every share, a consumer's note that the provider
#: never acknowledged its receipt, and a witness's record of each checkpoint it
#: cosigned (checked against the witnessed log's own entries).
CROSS_CHECKED_EVENTS = frozenset(
    {"share.sent", "share.received", "share.receipt_failed", "witness.cosigned"}
)


def checkpoint_name(size: int) -> str:
    """Return the bundle file name of the checkpoint of ``size``."""
    return f"checkpoints/{size:012d}.note"
