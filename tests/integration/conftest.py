"""Fixtures that run real fednode node processes on loopback.

Each test gets its own federation in a temporary folder: a real CA, real
certificates, a signed directory, and ``fednode serve`` processes. Helpers
run the real ``fednode`` CLI as a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.localfed import DepartmentSpec, LocalFederation, provision

pytestmark = pytest.mark.integration

DEPARTMENTS = [
    DepartmentSpec("traffic", "Traffic Management Bureau"),
    DepartmentSpec("security", "Public Security Bureau"),
    DepartmentSpec("health", "Health Commission"),
]


@pytest.fixture
def federation_factory(tmp_path: Path) -> Iterator[Any]:
    """Build federations on demand; every node started through them is stopped afterwards."""
    made: list[LocalFederation] = []

    def make(
        departments: list[DepartmentSpec] | None = None,
        *,
        start: bool = True,
        name: str = "city",
        witness_threshold: int | None = None,
    ) -> LocalFederation:
        root = tmp_path / f"fed{len(made)}"
        fed = provision(root, name, departments or DEPARTMENTS, witness_threshold=witness_threshold)
        made.append(fed)
        if start:
            for department in fed.homes:
                fed.start(department)
            fed.wait_ready()
        return fed

    yield make
    for fed in made:
        fed.stop_all()


@pytest.fixture
def federation(federation_factory: Any) -> LocalFederation:
    """Three running departments (traffic, security, health) of federation 'city'."""
    fed: LocalFederation = federation_factory()
    return fed
