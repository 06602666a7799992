"""The exchange's durable state: share ids seen (replay defence) and shares sent.

Stored in one SQLite file under the node home (WAL, ``synchronous=FULL``), so a
claimed share id survives a crash and a restart: once :meth:`ExchangeStore.claim`
returns, the same id is refused forever, even if the share later failed.

A sent share takes one receipt: :meth:`ExchangeStore.attach_receipt` is a
single conditional update, so of two concurrent callers with the same receipt
exactly one succeeds. The ledger sequence number of its ``share.sent`` entry is
stored afterwards (:meth:`ExchangeStore.mark_recorded`); a share holding a
receipt without one (the node stopped in between) is listed by
:meth:`ExchangeStore.unrecorded` for the provider to record at its next start.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.canonical import dumps, loads
from node.errors import ExchangeError
from node.exchange.errors import ReceiptError, ReplayError
from node.sqlite_db import open_versioned_db

__all__ = ["ExchangeStore", "SentShare"]

_SCHEMA_VERSION = 2
#: ``sent_seq`` is the ledger sequence number of the share's ``share.sent``
#: entry: NULL until it is recorded, 0 for a share recorded by a node that did
#: not keep the number (schema version 1).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_shares (
    share_id BLOB PRIMARY KEY, sender TEXT NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent_shares (
    share_id BLOB PRIMARY KEY, consumer TEXT NOT NULL, agreement TEXT NOT NULL,
    dataset TEXT NOT NULL, columns TEXT NOT NULL, purpose TEXT NOT NULL,
    digest TEXT NOT NULL, rows INTEGER NOT NULL, chunks INTEGER NOT NULL,
    sent_at INTEGER NOT NULL, receipt BLOB, sent_seq INTEGER);
"""
_SENT_COLUMNS = (
    "share_id, consumer, agreement, dataset, columns, purpose, digest, rows, chunks, receipt, "
    "sent_seq"
)


def _add_sent_seq(db: sqlite3.Connection) -> None:
    # Version 1 recorded share.sent right after storing the receipt.
    db.execute("ALTER TABLE sent_shares ADD COLUMN sent_seq INTEGER")
    db.execute("UPDATE sent_shares SET sent_seq = 0 WHERE receipt IS NOT NULL")


_MIGRATIONS = {1: _add_sent_seq}


@dataclass(frozen=True)
class SentShare:
    """A share this node streamed completely, awaiting or holding its receipt."""

    share_id: bytes
    consumer: str
    agreement: str
    dataset: str
    columns: list[str]
    purpose: str
    digest: str
    rows: int
    chunks: int
    receipt: dict[str, object] | None
    #: Ledger sequence number of ``share.sent``; ``None`` until it is recorded.
    sent_seq: int | None = None


class ExchangeStore:
    """Thread-safe access to the exchange database."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the database at ``path``.

        Raises:
            ExchangeError: the file is not a database of a known schema version.
        """
        self._lock = threading.Lock()
        self._db = open_versioned_db(
            path, _SCHEMA, _SCHEMA_VERSION, ExchangeError, "exchange database", _MIGRATIONS
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, share_id: bytes, sender: str = "") -> None:
        """Record ``share_id`` as seen; durable on return.

        Raises:
            ReplayError: the id was claimed before.
        """
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO seen_shares VALUES (?, ?, ?)",
                    (share_id, sender, int(time.time())),
                )
            except sqlite3.IntegrityError as e:
                raise ReplayError(
                    f"share_id {share_id.hex()} was already received; refusing a replay"
                ) from e

    def record_sent(self, share: SentShare) -> None:
        """Remember a completely streamed share so its receipt can be matched."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sent_shares VALUES (?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                (
                    share.share_id,
                    share.consumer,
                    share.agreement,
                    share.dataset,
                    dumps(share.columns).decode(),
                    share.purpose,
                    share.digest,
                    share.rows,
                    share.chunks,
                    int(time.time()),
                ),
            )

    def sent(self, share_id: bytes) -> SentShare | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SENT_COLUMNS} FROM sent_shares WHERE share_id = ?",  # noqa: S608
                (share_id,),
            ).fetchone()
        return None if row is None else _sent_share(row)

    def attach_receipt(self, share_id: bytes, receipt: dict[str, object]) -> None:
        """Store the receipt of a sent share that has none; durable on return.

        One statement both checks and sets, so of concurrent callers exactly
        one succeeds.

        Raises:
            ReceiptError: the share is unknown or already has a receipt.
        """
        with self._lock:
            cursor = self._db.execute(
                "UPDATE sent_shares SET receipt = ? WHERE share_id = ? AND receipt IS NULL",
                (dumps(receipt), share_id),
            )
            attached = cursor.rowcount
        if attached != 1:
            raise ReceiptError(f"share {share_id.hex()} already has a receipt, or is unknown")

    def mark_recorded(self, share_id: bytes, seq: int) -> None:
        """Note the ledger sequence number of the share's ``share.sent`` entry."""
        with self._lock:
            self._db.execute(
                "UPDATE sent_shares SET sent_seq = ? WHERE share_id = ?", (seq, share_id)
            )

    def unrecorded(self) -> list[SentShare]:
        """Shares that hold a receipt but whose ``share.sent`` was never recorded."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SENT_COLUMNS} FROM sent_shares "  # noqa: S608
                "WHERE receipt IS NOT NULL AND sent_seq IS NULL ORDER BY sent_at"
            ).fetchall()
        return [_sent_share(row) for row in rows]


def _sent_share(row: tuple[Any, ...]) -> SentShare:
    return SentShare(
        share_id=row[0],
        consumer=row[1],
        agreement=row[2],
        dataset=row[3],
        columns=list(loads(row[4].encode())),
        purpose=row[5],
        digest=row[6],
        rows=row[7],
        chunks=row[8],
        receipt=None if row[9] is None else dict(loads(row[9])),
        sent_seq=row[10],
    )
