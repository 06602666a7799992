"""Revocation notices between real node processes.

``health`` provides and ``statistics`` consumes, as in ``test_exchange.py``.
Whichever side revokes, the other side's copy must follow at once, on a
notice signed by the revoking department; forged notices must change nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements.revocation import make_notice
from node.config import load_config
from node.errors import AccessDenied
from node.exchange import convert
from node.identity import keys
from node.localfed import LocalFederation
from tests.integration.helpers import exchange_stub, fednode
from tests.integration.test_exchange import (  # noqa: F401 -- pair is a fixture
    admin,
    agreement_file,
    fetch,
    ledger_events,
    pair,
    start,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(request: pytest.FixtureRequest) -> LocalFederation:
    """health and statistics running, health holding the visits dataset (test_exchange's pair)."""
    federation: LocalFederation = request.getfixturevalue("pair")
    return federation


def events(fed: LocalFederation, department: str, name: str) -> list[dict[str, Any]]:
    return [e for e in ledger_events(fed.homes[department]) if e["event"] == name]


def state(fed: LocalFederation, department: str, agreement_id: str) -> dict[str, Any]:
    return admin(fed, department, "agreement.show", id=agreement_id)


def test_a_provider_revocation_reaches_the_consumer(fed: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path)
    revoked = fednode(
        "agreement", "revoke", agreement_id, "--reason", "purpose ended",
        "--home", fed.homes["health"],
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    assert "the other party was notified" in revoked.stdout
    consumer = state(fed, "statistics", agreement_id)
    assert consumer["state"] == "revoked"
    assert consumer["reason"] == "revoked by health: purpose ended"
    [entry] = events(fed, "statistics", "agreement.revoked")
    # Revoked at health's request: health is the peer; nobody acted on this node.
    assert entry["peer"] == "health" and entry["actor"] is None
    assert entry["agreement"] == agreement_id
    [own] = events(fed, "health", "agreement.revoked")
    assert own["actor"] == "operator"
    [sent] = events(fed, "health", "agreement.revocation_sent")
    assert sent["outcome"] == "ok"
    # The consumer's own node now refuses to ask for the share at all.
    refused = fetch(fed, agreement_id, tmp_path / "out.parquet")
    assert refused.returncode != 0 and "revoked" in refused.stderr
    assert not (tmp_path / "out.parquet").exists()


def _raw_bytes(path: Path) -> bytes:
    """A SQLite file and its WAL, read raw from disk, as a forensic copy would be."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def _agreement_store_bytes(fed: LocalFederation, department: str) -> bytes:
    return _raw_bytes(load_config(fed.homes[department]).data_dir / "agreements.db")


def _ledger_bytes(fed: LocalFederation, department: str) -> bytes:
    return _raw_bytes(load_config(fed.homes[department]).ledger_dir / "ledger.sqlite")


def test_a_revocation_reason_can_be_erased_from_both_ledgers_and_stores(
    fed: LocalFederation, tmp_path: Path
) -> None:
    # A reason is free text and may name people: each ledger holds it as a
    # commitment that an erasure request can shred, with every proof intact,
    # and erasing it there erases the agreement store's copy on the same node.
    # Each party erases its own copies.
    agreement_id, _ = agreement_file(fed, tmp_path)
    reason = "analyst W. Zhang exported rows outside the purpose"
    admin(fed, "health", "agreement.revoke", id=agreement_id, reason=reason)
    for department, paths, other in (
        ("health", ["detail.reason"], "statistics"),
        ("statistics", ["detail.notice", "detail.reason"], "health"),
    ):
        [entry] = events(fed, department, "agreement.revoked")
        assert entry["sensitive"] == paths
        assert all(entry["detail"][p.split(".")[1]].startswith("sha256:") for p in paths)
        assert b"W. Zhang" in _agreement_store_bytes(fed, department)
        assert b"W. Zhang" in _ledger_bytes(fed, department)
        home = fed.homes[department]
        # Every entry that holds the reason, as an erasure request would find them.
        holding = [e for e in ledger_events(home) if e["sensitive"]]
        assert {e["event"] for e in holding} <= {"agreement.revoked", "agreement.revocation_sent"}
        fields_left = {(e["seq"], p) for e in holding for p in e["sensitive"]}
        for held in holding:
            for path in held["sensitive"]:
                erased = fednode("ledger", "erase", str(held["seq"]), path, "--home", home)
                assert erased.returncode == 0, erased.stderr
                fields_left.discard((held["seq"], path))
                # Every other field holding the same reason is named, with the command.
                for seq, other_path in fields_left:
                    assert f"fednode ledger erase {seq} {other_path}" in erased.stdout
                assert f"the reason kept with agreement {agreement_id} on this node is erased" in (
                    erased.stdout
                )
                assert f"{other} keeps its own copy" in erased.stdout
        shown = state(fed, department, agreement_id)
        assert shown["state"] == "revoked" and shown["reason"] is None
        assert shown["reason_erased_at"] is not None
        text = fednode("agreement", "show", agreement_id, "--home", home, check=True).stdout
        assert "(erased " in text and "Zhang" not in text
        assert b"W. Zhang" not in _agreement_store_bytes(fed, department)
        assert b"W. Zhang" not in _ledger_bytes(fed, department)
        # Only this node's copies: the other party still holds its own until its operator acts.
        if other == "statistics":
            assert "W. Zhang" in state(fed, other, agreement_id)["reason"]
        # Running it again (as after a crash) is no error, and is recorded as a repeat.
        again = fednode("ledger", "erase", str(entry["seq"]), paths[0], "--home", home)
        assert again.returncode == 0, again.stderr
        assert "was already erased (recorded again as entry" in again.stdout
        wrong = fednode("ledger", "erase", str(entry["seq"]), "detail.other", "--home", home)
        assert wrong.returncode == 2, wrong.stderr
        assert "has no committed field 'detail.other'" in wrong.stderr
        missing = fednode("ledger", "erase", "999999", "detail.reason", "--home", home)
        assert missing.returncode == 2, missing.stderr
        assert "the ledger has no entry 999999" in missing.stderr
        [first, repeat] = [
            e
            for e in events(fed, department, "ledger.erased")
            if (e["detail"]["seq"], e["detail"]["field"]) == (entry["seq"], paths[0])
        ]
        assert first["actor"] == "operator" and first["agreement"] == agreement_id
        assert first["detail"]["agreement_reason"] == "erased"
        assert "already_erased" not in first["detail"] and repeat["detail"]["already_erased"]
        bundle = tmp_path / department
        fednode("ledger", "checkpoint", "--home", home)
        fednode("ledger", "export", "--out", bundle, "--home", home, check=True)
        exported = b"".join(f.read_bytes() for f in bundle.rglob("*") if f.is_file())
        assert b"W. Zhang" not in exported
    verified = fednode(
        "ledger", "verify", tmp_path / "health", tmp_path / "statistics", "--ca", fed.ca_pem
    )
    assert verified.returncode == 0, verified.stderr


def test_a_consumer_revocation_reaches_the_provider(fed: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path)
    result = admin(
        fed, "statistics", "agreement.revoke", id=agreement_id, reason="no longer needed"
    )
    assert result["state"] == "revoked" and result["peer_notified"] is True
    provider = state(fed, "health", agreement_id)
    assert provider["state"] == "revoked"
    assert provider["reason"] == "revoked by statistics: no longer needed"


def test_an_unreachable_peer_is_reported_and_the_notice_can_be_sent_again(
    fed: LocalFederation, tmp_path: Path
) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path)
    fed.stop("statistics")
    revoked = fednode(
        "agreement", "revoke", agreement_id, "--reason", "audit finding",
        "--home", fed.homes["health"],
    )  # fmt: skip
    assert revoked.returncode == 5, revoked.stderr  # revoked here, but not yet there
    assert "was not notified" in revoked.stderr and "Run the same command again" in revoked.stderr
    assert state(fed, "health", agreement_id)["state"] == "revoked"
    [failed] = events(fed, "health", "agreement.revocation_sent")
    assert failed["outcome"] == "error"
    start(fed, "statistics")
    assert state(fed, "statistics", agreement_id)["state"] == "active"
    again = fednode("agreement", "revoke", agreement_id, "--home", fed.homes["health"])
    assert again.returncode == 0 and "the other party was notified" in again.stdout
    assert state(fed, "statistics", agreement_id)["reason"] == "revoked by health: audit finding"


def test_forged_notices_change_nothing(fed: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path)
    digest = state(fed, "health", agreement_id)["digest"]
    statistics_key = keys.load_ed25519(load_config(fed.homes["statistics"]).signing_key_path)
    fields = {"agreement": agreement_id, "digest": digest, "by": "statistics",
              "reason": "forged", "time": int(time.time())}  # fmt: skip
    forged = [
        (make_notice(ed25519.Ed25519PrivateKey.generate(), **fields), "does not verify"),
        (make_notice(statistics_key, **{**fields, "digest": "sha256:" + "00" * 32}), "version"),
        (make_notice(statistics_key, **{**fields, "by": "health"}), "but statistics sent it"),
        (make_notice(statistics_key, **{**fields, "agreement": "agr-" + "0" * 32}), "agr-"),
        # Rightly signed, but it would make both ledgers carry a novel.
        (make_notice(statistics_key, **{**fields, "reason": "x" * 501}), "above 500"),
    ]
    stub = exchange_stub(fed, "statistics", "health")
    for notice, match in forged:
        with pytest.raises(grpc.RpcError) as refused:
            stub.Revoke(convert.revocation_to_proto(notice), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert match in str(refused.value.details())
    assert state(fed, "health", agreement_id)["state"] == "active"
    assert len(events(fed, "health", "access.denied")) >= len(forged)
    # The same notice, signed by the right key, is taken.
    honest = make_notice(statistics_key, **fields)
    ack = stub.Revoke(convert.revocation_to_proto(honest), timeout=10)
    assert ack.state == "revoked"
    assert state(fed, "health", agreement_id)["state"] == "revoked"
    with pytest.raises(AccessDenied):
        admin(
            fed,
            "statistics",
            "share.fetch",
            **{"from": "health", "agreement": agreement_id, "out": str(tmp_path / "x.parquet")},
        )


def test_an_overlong_reason_is_refused_before_anything_changes(
    fed: LocalFederation, tmp_path: Path
) -> None:
    agreement_id, _ = agreement_file(fed, tmp_path)
    refused = fednode(
        "agreement", "revoke", agreement_id, "--reason", "x" * 501,
        "--home", fed.homes["health"],
    )  # fmt: skip
    assert refused.returncode != 0
    assert "revocation reason is 501 characters, above 500" in refused.stderr
    assert state(fed, "health", agreement_id)["state"] == "active"
    assert state(fed, "statistics", agreement_id)["state"] == "active"
    assert not events(fed, "health", "agreement.revoked")
