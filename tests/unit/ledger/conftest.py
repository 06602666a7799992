"""Fixtures for ledger tests; the federation itself is built in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.ledger.helpers import Federation


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    yield fed
    fed.close()
