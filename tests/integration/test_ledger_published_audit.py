"""A formal audit on published history only: ``export --published-only`` then
``verify --require-published``, against real nodes.

Every export records its own call in the ledger, after any checkpoint, so a
full bundle always ends with entries no checkpoint covers; ``--published-only``
ends the bundle at the last published checkpoint instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.localfed import LocalFederation
from tests.integration.helpers import fednode

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(federation_factory: Any) -> LocalFederation:
    federation: LocalFederation = federation_factory(witness_threshold=1)
    return federation


def test_a_published_only_bundle_passes_a_require_published_audit(
    fed: LocalFederation, tmp_path: Path
) -> None:
    home = fed.homes[sorted(fed.homes)[0]]
    early = fednode(
        "ledger", "export", "--published-only", "--out", tmp_path / "early", "--home", home
    )
    assert early.returncode == 2, early.stderr
    assert "no checkpoint of this ledger is published yet" in early.stderr
    assert not (tmp_path / "early").exists()

    done = fednode("ledger", "checkpoint", "--json", "--home", home)
    assert done.returncode == 0 and json.loads(done.stdout)["published"], done.stderr
    size = json.loads(done.stdout)["size"]
    full, published = tmp_path / "full.zip", tmp_path / "published.zip"
    fednode("ledger", "export", "--out", full, "--home", home, check=True)
    exported = fednode(
        "ledger", "export", "--published-only", "--out", published, "--home", home, check=True
    )
    assert f"{size} entries" in exported.stdout

    audit = ["ledger", "verify", "--ca", fed.ca_pem, "--require-published"]
    refused = fednode(*audit, full)
    assert refused.returncode == 7, refused.stderr
    assert "covered by no published checkpoint" in refused.stderr
    passed = fednode(*audit, published)
    assert passed.returncode == 0, passed.stderr
