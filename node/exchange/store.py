"""The exchange's durable state: share ids seen (replay defence) and shares sent.

Stored in one SQLite file under the node home (WAL, ``synchronous=FULL``), so a
claimed share id survives a crash and a restart: once :meth:`ExchangeStore.claim`
returns, the same id is refused forever, even if the share later failed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.canonical import dumps, loads
from node.errors import ExchangeError
from node.exchange.errors import ReplayError
from node.sqlite_db import open_versioned_db

__all__ = ["ExchangeStore", "SentShare"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_shares (
    share_id BLOB PRIMARY KEY, sender TEXT NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent_shares (
    share_id BLOB PRIMARY KEY, consumer TEXT NOT NULL, agreement TEXT NOT NULL,
    dataset TEXT NOT NULL, columns TEXT NOT NULL, purpose TEXT NOT NULL,
    digest TEXT NOT NULL, rows INTEGER NOT NULL, chunks INTEGER NOT NULL,
    sent_at INTEGER NOT NULL, receipt BLOB);
"""


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


class ExchangeStore:
    """Thread-safe access to the exchange database."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the database at ``path``.

        Raises:
            ExchangeError: the file is not a database of a known schema version.
        """
        self._lock = threading.Lock()
        self._db = open_versioned_db(
            path, _SCHEMA, _SCHEMA_VERSION, ExchangeError, "exchange database"
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
                "INSERT OR REPLACE INTO sent_shares VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
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
                "SELECT share_id, consumer, agreement, dataset, columns, purpose, digest, rows, "
                "chunks, receipt FROM sent_shares WHERE share_id = ?",
                (share_id,),
            ).fetchone()
        if row is None:
            return None
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
        )

    def attach_receipt(self, share_id: bytes, receipt: dict[str, object]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE sent_shares SET receipt = ? WHERE share_id = ?",
                (dumps(receipt), share_id),
            )
