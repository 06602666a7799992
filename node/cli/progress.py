"""Progress displays fitted to the operator's terminal.

rich gives the description column whatever the other columns leave; a long
file or department name would push the bar onto a second line on an 80-column
terminal, so it is shortened to the room left.
"""

from __future__ import annotations

__all__ = ["fit_description"]

#: Never shorten a description below this, whatever the terminal's width.
MIN_DESCRIPTION = 12


def fit_description(description: str, width: int, used: int) -> str:
    """``description`` cut (with an ellipsis) to the ``width`` the other columns leave.

    ``used`` is the other columns' widths and the spaces between them, as rich
    lays them out.
    """
    room = max(MIN_DESCRIPTION, width - used - 2)
    if len(description) > room:
        return description[: room - 1] + "…"
    return description
