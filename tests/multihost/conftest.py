"""Fixtures for multi-host tests: network labs that are always torn down."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

# The lab library sits beside this file; tests/multihost is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns import Lab, skip_reason, sweep_orphans

LabFactory = Callable[[Sequence[str]], Lab]


@functools.cache
def unavailable_reason() -> str | None:
    """Why labs cannot be built here (computed once per session), or None.

    When labs can be built, this also sweeps labs left by killed earlier runs.
    """
    reason = skip_reason()
    if reason is None:
        sweep_orphans()
    return reason


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
