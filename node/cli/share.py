"""``fednode share``: command group (its commands are added as the subsystem lands)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    subparsers.add_parser(
        "share", help="(not available in this build)", description="Not available in this build."
    )
