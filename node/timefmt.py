"""Times in messages for people: UTC, to the second, never bare Unix seconds."""

from __future__ import annotations

import datetime as dt

__all__ = ["utc_text"]


def utc_text(seconds: float | None) -> str:
    """``2026-11-29 02:30:00 UTC`` for Unix ``seconds``; ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
