"""Fixtures for multi-host tests: network labs that are always torn down."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

# The lab library sits beside this file; tests/multihost is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns import Lab, LabFactory, unavailable_reason


@pytest.fixture
def make_lab() -> Iterator[LabFactory]:
    """A factory that builds labs; each one is closed when the test ends, pass or fail."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    built: list[Lab] = []

    def factory(departments: Sequence[str]) -> Lab:
        new = Lab.create(departments)
        built.append(new)
        return new

    try:
        yield factory
    finally:
        for each in built:
            each.close()
