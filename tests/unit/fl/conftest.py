"""Fixtures for the federated-learning unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from node.fl.bundle import build_bundle
from tests.unit.fl.fl_fakes import APP, Cluster, LocalNode, end_jobs


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # Building a Flower instruction Message needs a task identity, as in a ServerApp process.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 42
    TaskIdentity.node_id = 1


@pytest.fixture(autouse=True)
def _end_local_jobs() -> Iterator[None]:
    yield
    while LocalNode.opened:
        end_jobs(LocalNode.opened.pop().participant)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, ["traffic", "security", "health"], approve=[APP])
    yield c
    c.close()


@pytest.fixture(scope="session")
def fab() -> bytes:
    """The sample app's FAB (built once: building takes a while)."""
    return build_bundle(APP).data
