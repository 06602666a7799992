"""A progress description is cut to the room the other columns leave, never below 12."""

from __future__ import annotations

import pytest

from node.cli.progress import MIN_DESCRIPTION, fit_description


@pytest.mark.parametrize(
    ("text", "width", "used", "expected"),
    [
        ("health -> visits.arrow", 80, 40, "health -> visits.arrow"),
        ("reading a-very-long-dataset-name", 60, 30, "reading a-very-long-dataset…"),
        ("reading a-very-long-dataset-name", 20, 30, "reading a-v…"),
    ],
)
def test_fit_description(text: str, width: int, used: int, expected: str) -> None:
    fitted = fit_description(text, width, used)
    assert fitted == expected
    assert len(fitted) <= max(MIN_DESCRIPTION, width - used - 2)
