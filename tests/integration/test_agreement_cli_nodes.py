"""The agreement commands an operator types, against real node processes.

``health`` provides the ``visits`` dataset and ``statistics`` consumes, as in
``test_exchange.py``. These cover what only a running node can tell: the
dataset's columns and labels, the provider being down, and time passing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ledger.canonical import loads
from node.localfed import LocalFederation
from tests.integration.helpers import fednode
from tests.integration.test_exchange import (  # noqa: F401 -- pair is a fixture
    admin,
    agreement_file,
    fetch,
    pair,
    start,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(request: pytest.FixtureRequest) -> LocalFederation:
    """health and statistics running, health holding the visits dataset (test_exchange's pair)."""
    federation: LocalFederation = request.getfixturevalue("pair")
    return federation


def create(fed: LocalFederation, out: Path, *columns: str) -> tuple[int, str, str]:
    done = fednode(
        "agreement", "create", "--home", fed.homes["health"], "--consumer", "statistics",
        "--dataset", "visits", "--purpose-code", "STAT-7", "--valid-until", "+1d",
        "--mode", "transfer", *[a for c in columns for a in ("--column", c)], "--out", out,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_create_checks_columns_against_the_catalog(fed: LocalFederation, tmp_path: Path) -> None:
    out = tmp_path / "visits.agreement"
    code, _, err = create(fed, out, "district=plain", "severty=plain")
    assert code == 9, err
    assert "dataset visits has no column severty" in err
    assert "person_id, age, district, diagnosis, income" in err
    assert "fednode dataset show visits" in err and "dataset changed" not in err
    assert not out.exists()
    assert admin(fed, "health", "agreement.list")["agreements"] == []

    # person_id and age are labelled personal: shared plain, they are named in a warning.
    code, _, err = create(fed, out, "district=plain", "person_id=plain", "age=plain")
    assert code == 0, err
    assert "warning: columns labelled personal are shared plain: age, person_id" in err
    treated = tmp_path / "treated.agreement"
    code, _, err = create(fed, treated, "district=plain", "person_id=pseudonymize")
    assert code == 0 and "warning" not in err, err


def test_a_failed_push_still_writes_the_file_for_the_provider_to_import(
    fed: LocalFederation, tmp_path: Path
) -> None:
    file = tmp_path / "visits.agreement"
    code, _, err = create(fed, file, "district=plain")
    assert code == 0, err
    fed.stop("health")
    pushed = fednode("agreement", "countersign", file, "--push", "--home", fed.homes["statistics"])
    assert pushed.returncode == 5, pushed.stderr
    assert "could not deliver it to health" in pushed.stderr
    assert "fednode agreement import visits.agreement" in pushed.stderr
    signed = loads(file.read_bytes())
    assert "consumer_signature" in signed
    agreement_id = signed["agreement"]["id"]
    assert admin(fed, "statistics", "agreement.show", id=agreement_id)["state"] == "active"

    start(fed, "health")
    assert admin(fed, "health", "agreement.show", id=agreement_id)["state"] == "proposed"
    imported = fednode("agreement", "import", file, "--home", fed.homes["health"])
    assert imported.returncode == 0, imported.stderr
    assert admin(fed, "health", "agreement.show", id=agreement_id)["state"] == "active"


def test_an_expired_agreement_is_shown_as_expired(fed: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path, valid_seconds=4)
    until = admin(fed, "health", "agreement.show", id=agreement_id)["agreement"]["valid_until"]
    time.sleep(max(0.0, until - time.time()) + 0.5)
    expiry = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
    for department in ("health", "statistics"):
        home = fed.homes[department]
        listed = fednode("agreement", "list", "--home", home, check=True)
        assert "expired" in listed.stdout and "active" not in listed.stdout
        [row] = json.loads(
            fednode("agreement", "list", "--json", "--home", home, check=True).stdout
        )["agreements"]
        assert (row["state"], row["expired_at"]) == ("expired", expiry)
        shown = fednode("agreement", "show", agreement_id, "--home", home, check=True).stdout
        assert f"{agreement_id}  [expired]" in shown and f"expired   {expiry}" in shown
        raw = fednode("agreement", "show", agreement_id, "--json", "--home", home, check=True)
        assert json.loads(raw.stdout)["state"] == "expired"
    refused = fetch(fed, agreement_id, tmp_path / "out.parquet")
    assert refused.returncode == 6 and f"expired at {expiry}" in refused.stderr


def test_an_agreement_revoked_before_countersigning_is_revoked_on_both_nodes(
    fed: LocalFederation, tmp_path: Path
) -> None:
    file = tmp_path / "visits.agreement"
    code, _, err = create(fed, file, "district=plain")
    assert code == 0, err
    agreement_id = loads(file.read_bytes())["agreement"]["id"]
    # The consumer holds no copy yet: nothing to notify, and not a failure.
    revoked = fednode("agreement", "revoke", agreement_id, "--home", fed.homes["health"])
    assert revoked.returncode == 0, revoked.stderr
    assert "never countersigned it, so it holds no copy to revoke" in revoked.stdout
    # Countersigning it later learns the revocation and keeps no active copy.
    pushed = fednode("agreement", "countersign", file, "--push", "--home", fed.homes["statistics"])
    assert pushed.returncode == 6, pushed.stderr
    assert "health had revoked this agreement before it was countersigned" in pushed.stderr
    for department in ("health", "statistics"):
        assert admin(fed, department, "agreement.show", id=agreement_id)["state"] == "revoked"
    refused = fetch(fed, agreement_id, tmp_path / "out.parquet")
    assert refused.returncode == 6, refused.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_an_expired_agreement_cannot_be_countersigned(fed: LocalFederation, tmp_path: Path) -> None:
    file = tmp_path / "visits.agreement"
    done = fednode(
        "agreement", "create", "--home", fed.homes["health"], "--consumer", "statistics",
        "--dataset", "visits", "--purpose-code", "STAT-7", "--valid-until", "+2s",
        "--mode", "transfer", "--column", "district=plain", "--out", file,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    until = loads(file.read_bytes())["agreement"]["valid_until"]
    time.sleep(max(0.0, until - time.time()) + 0.5)
    pushed = fednode("agreement", "countersign", file, "--push", "--home", fed.homes["statistics"])
    assert pushed.returncode == 6, pushed.stderr
    assert "expired at" in pushed.stderr and "it cannot be countersigned" in pushed.stderr
    assert "ask health for a new agreement" in pushed.stderr
    assert admin(fed, "statistics", "agreement.list")["agreements"] == []
