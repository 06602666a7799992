"""Fixtures for ledger tests; the federation itself is built in ``helpers.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.ledger.helpers import Federation
from tests.unit.ledger.reenrolment import Rekeyed, Shares, build_rekeyed


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    yield fed
    fed.close()


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., Rekeyed]]:
    """Build the bundles of a re-enrolment (see :func:`build_rekeyed`); the stores are
    closed afterwards."""
    made: list[Rekeyed] = []

    def make(before: Shares | None = None, after: Shares | None = None) -> Rekeyed:
        made.append(build_rekeyed(tmp_path, before, after))
        return made[-1]

    yield make
    for built in made:
        built.federation.close()


@pytest.fixture
def rekeyed(build: Callable[..., Rekeyed]) -> Rekeyed:
    """The bundles of a re-enrolment without shares."""
    made: Rekeyed = build()
    return made


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of everything ``os.fsync`` is called on from now on, in order."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        paths.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths
