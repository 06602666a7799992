"""The provider's side of receipts: one ``share.sent`` per share, never zero, never two.

The exchange store is the real SQLite store; the ledger is a recording fake
with the runtime's ``audit.record`` interface.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.exchange.errors import ReceiptError
from node.exchange.provider import (
    accept_receipt,
    exchange_store_of,
    record_unrecorded_receipts,
)
from node.exchange.receipt import make_receipt
from node.exchange.store import ExchangeStore, SentShare
from node.identity.keys import ed25519_public_raw

CONSUMER_KEY = ed25519.Ed25519PrivateKey.generate()
DIGEST = "sha256:" + "ab" * 32


class Ledger:
    """Records entries like the node's audit; ``fail`` makes the next append raise."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self.fail = False
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> int:
        with self._lock:
            if self.fail:
                self.fail = False
                raise OSError("the node stopped before the ledger append")
            self.entries.append((event, fields))
            return len(self.entries)

    def sent(self, share_id: bytes) -> list[dict[str, Any]]:
        return [
            f
            for e, f in self.entries
            if e == "share.sent" and f["detail"]["share_id"] == share_id.hex()
        ]


def provider(tmp_path: Path, directory_get: Any = None) -> Any:
    entry = SimpleNamespace(ed25519_public=ed25519_public_raw(CONSUMER_KEY))
    return SimpleNamespace(
        department="health",
        config=SimpleNamespace(data_dir=tmp_path),
        extensions={},
        directory=SimpleNamespace(get=directory_get or (lambda department: entry)),
        audit=Ledger(),
    )


def sent_share(node: Any) -> tuple[bytes, dict[str, Any]]:
    """Record a completely streamed share; returns its id and the consumer's receipt."""
    share_id = os.urandom(16)
    exchange_store_of(node).record_sent(
        SentShare(share_id, "statistics", "agr-1", "visits", ["district"], "X", DIGEST, 10, 1, None)
    )
    receipt = make_receipt(
        CONSUMER_KEY, share_id=share_id, digest=DIGEST, rows=10, chunks=1, sender="health",
        recipient="statistics", agreement="agr-1", time=int(time.time()),
    )  # fmt: skip
    return share_id, receipt


def test_concurrent_acknowledgements_of_one_share_record_it_once(tmp_path: Path) -> None:
    callers = 8
    # Every caller has passed the "no receipt yet" check before any verifies
    # and attaches: the widest the race can be.
    all_checked = threading.Barrier(callers)
    entry = SimpleNamespace(ed25519_public=ed25519_public_raw(CONSUMER_KEY))

    def directory_get(department: str) -> Any:
        all_checked.wait(timeout=10)
        return entry

    node = provider(tmp_path, directory_get)
    share_id, receipt = sent_share(node)
    outcomes: list[str] = []

    def acknowledge() -> None:
        try:
            accept_receipt(node, "statistics", receipt)
            outcomes.append("recorded")
        except ReceiptError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=acknowledge) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(outcomes) == callers and outcomes.count("recorded") == 1
    assert all("already has a receipt" in o for o in outcomes if o != "recorded")
    [entry_sent] = node.audit.sent(share_id)
    assert entry_sent["detail"]["receipt"] == receipt
    assert exchange_store_of(node).sent(share_id).sent_seq == 1  # type: ignore[union-attr]


def test_a_receipt_stored_but_not_recorded_is_recorded_at_the_next_start(
    tmp_path: Path,
) -> None:
    node = provider(tmp_path)
    share_id, receipt = sent_share(node)
    node.audit.fail = True
    with pytest.raises(OSError, match="stopped before the ledger append"):
        accept_receipt(node, "statistics", receipt)
    assert node.audit.sent(share_id) == []
    # The consumer trying again cannot record it twice: the share holds its receipt.
    with pytest.raises(ReceiptError, match="already has a receipt"):
        accept_receipt(node, "statistics", receipt)
    [pending] = exchange_store_of(node).unrecorded()
    assert pending.share_id == share_id and pending.receipt == receipt

    restarted = provider(tmp_path)
    restarted.audit = node.audit
    assert record_unrecorded_receipts(restarted) == 1
    [entry] = node.audit.sent(share_id)
    assert entry["detail"]["receipt"] == receipt and entry["digest"] == DIGEST
    assert exchange_store_of(restarted).unrecorded() == []
    assert record_unrecorded_receipts(restarted) == 0
    assert len(node.audit.sent(share_id)) == 1


def test_a_receipt_for_an_unknown_share_is_not_attached(tmp_path: Path) -> None:
    store = ExchangeStore(tmp_path / "exchange.db")
    with pytest.raises(ReceiptError, match="already has a receipt, or is unknown"):
        store.attach_receipt(os.urandom(16), {"receipt": {}})


def test_a_version_1_store_is_upgraded_and_its_receipts_count_as_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "exchange.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE seen_shares (
                share_id BLOB PRIMARY KEY, sender TEXT NOT NULL, seen_at INTEGER NOT NULL);
            CREATE TABLE sent_shares (
                share_id BLOB PRIMARY KEY, consumer TEXT NOT NULL, agreement TEXT NOT NULL,
                dataset TEXT NOT NULL, columns TEXT NOT NULL, purpose TEXT NOT NULL,
                digest TEXT NOT NULL, rows INTEGER NOT NULL, chunks INTEGER NOT NULL,
                sent_at INTEGER NOT NULL, receipt BLOB);
            """
        )
        row = ("statistics", "agr-1", "visits", '["district"]', "X", DIGEST, 10, 1, 0)
        db.execute(
            "INSERT INTO sent_shares VALUES (?,?,?,?,?,?,?,?,?,?,?)", (b"a" * 16, *row, b"{}")
        )
        db.execute("INSERT INTO sent_shares VALUES (?,?,?,?,?,?,?,?,?,?,NULL)", (b"b" * 16, *row))
    store = ExchangeStore(path)
    assert store.sent(b"a" * 16).sent_seq == 0  # type: ignore[union-attr]
    assert store.sent(b"b" * 16).sent_seq is None  # type: ignore[union-attr]
    assert store.unrecorded() == []
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
