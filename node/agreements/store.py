"""The node's agreements: one SQLite file, with each agreement's state and pseudonym key.

States move one way: ``proposed`` (provider-signed) -> ``active`` (countersigned)
-> ``revoked``; ``proposed`` may also go straight to ``revoked``. ``expired``
is never stored: it is how an unrevoked agreement past its ``valid_until`` is
shown (:meth:`AgreementRecord.state_at`), computed at the time it is shown, so
the store needs no sweeper and no clock-driven writes. Invariants:

* a revocation is durable when :meth:`AgreementStore.revoke` returns, and every
  later :meth:`AgreementStore.get` sees it, so shares in flight that re-check
  per chunk stop at their next chunk;
* the signed document of an agreement never changes once stored; a
  countersigned copy may only add the consumer's signature to the same document;
* the pseudonym key (32 random bytes) exists only on the provider and never
  leaves this file;
* an erased revocation reason (:meth:`AgreementStore.erase_reason`) is gone
  from the file's bytes, not only from its rows, once the call returns: the
  connection runs with ``secure_delete``, the erasure is followed by a
  ``VACUUM`` (old copies in free pages, written before this or by an SQLite
  built without secure delete) and a checkpoint that empties the WAL.
  Erasing is idempotent, so an erasure cut short is finished by running it
  again.

Schema version 2 added the ``reason_erased`` column; a version 1 file is
upgraded when opened, and a fednode that reads version 1 then refuses it
rather than writing rows of the wrong width.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.agreements.document import SignedAgreement
from node.errors import AgreementError, BusyError
from node.sqlite_db import Migration, open_versioned_db
from node.timefmt import utc_text

__all__ = ["SHOWN_STATES", "STATES", "AgreementRecord", "AgreementStore"]

STATES = ("proposed", "active", "revoked")
#: States a record can be shown in: the stored ones, and ``expired``.
SHOWN_STATES = (*STATES, "expired")
_SCHEMA_VERSION = 2
_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agreements (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, consumer TEXT NOT NULL,
    dataset TEXT NOT NULL, state TEXT NOT NULL, signed BLOB NOT NULL,
    pseudonym_key BLOB, updated INTEGER NOT NULL, revoked_at INTEGER, reason TEXT,
    reason_erased INTEGER);
"""
_COLUMNS = "signed, state, pseudonym_key, updated, revoked_at, reason, reason_erased"
_INSERT = (
    "INSERT INTO agreements (id, provider, consumer, dataset, state, signed, pseudonym_key, "
    "updated) VALUES (?,?,?,?,?,?,?,?)"
)


@dataclass(frozen=True)
class AgreementRecord:
    signed: SignedAgreement
    state: str
    # Kept out of repr: a logged or printed record must never show the key.
    pseudonym_key: bytes | None = field(repr=False)
    updated: int
    revoked_at: int | None
    #: ``None`` once the reason was erased (see ``reason_erased``).
    reason: str | None
    #: When the revocation reason was erased from this store, in Unix seconds.
    reason_erased: int | None = None

    def state_at(self, now: int) -> str:
        """The state to show at ``now``: ``expired`` for an unrevoked agreement past its window.

        Access decisions do not use this; :mod:`node.agreements.policy` checks
        the window itself.
        """
        if self.state != "revoked" and now >= self.signed.valid_until:
            return "expired"
        return self.state

    def to_json(self, now: int | None = None) -> dict[str, object]:
        """The record for display; ``state`` is :meth:`state_at` ``now`` (default: the clock)."""
        shown = self.state_at(int(time.time()) if now is None else now)
        return {
            "state": shown,
            "expired_at": utc_text(self.signed.valid_until) if shown == "expired" else None,
            "updated": self.updated,
            "revoked_at": self.revoked_at,
            "reason": self.reason,
            "reason_erased_at": self.reason_erased,
            "digest": self.signed.digest,
            "countersigned": self.signed.consumer_signature is not None,
            **self.signed.to_json(),
        }


def _add_reason_erased(db: sqlite3.Connection) -> None:
    """Version 1 to 2: the time a revocation reason was erased."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(agreements)")}
    if "reason_erased" not in columns:
        db.execute("ALTER TABLE agreements ADD COLUMN reason_erased INTEGER")


_MIGRATIONS: dict[int, Migration] = {1: _add_reason_erased}


class AgreementStore:
    """Thread-safe access to ``agreements.db``."""

    def __init__(self, path: Path) -> None:
        """Open or create the store.

        Raises:
            AgreementError: the file is unreadable or of an unknown schema version.
        """
        self._lock = threading.Lock()
        self._db = open_versioned_db(
            path, _SQL, _SCHEMA_VERSION, AgreementError, "agreement store", _MIGRATIONS
        )
        try:
            # Deleted and overwritten content is zeroed, whatever SQLite's build
            # default; VACUUM's temporary copy, pseudonym keys included, stays in memory.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as e:
            self._db.close()
            raise AgreementError(f"cannot open agreement store {path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _record(row: tuple[object, ...]) -> AgreementRecord:
        signed, state, key, updated, revoked_at, reason, reason_erased = row
        assert isinstance(signed, bytes)
        return AgreementRecord(
            SignedAgreement.from_bytes(signed),
            str(state),
            key if isinstance(key, bytes) else None,
            int(str(updated)),
            None if revoked_at is None else int(str(revoked_at)),
            None if reason is None else str(reason),
            None if reason_erased is None else int(str(reason_erased)),
        )

    def find(self, agreement_id: str) -> AgreementRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM agreements WHERE id = ?",  # noqa: S608 -- constant columns
                (agreement_id,),
            ).fetchone()
        return None if row is None else self._record(row)

    def get(self, agreement_id: str) -> AgreementRecord:
        """The agreement with ``agreement_id``.

        Raises:
            AgreementError: no such agreement is stored here.
        """
        record = self.find(agreement_id)
        if record is None:
            raise AgreementError(
                f"no agreement {agreement_id!r} on this node", hint="see 'fednode agreement list'"
            )
        return record

    def list(self) -> list[AgreementRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM agreements ORDER BY updated, id"  # noqa: S608
            ).fetchall()
        return [self._record(r) for r in rows]

    def add_proposed(self, signed: SignedAgreement) -> AgreementRecord:
        """Store a provider-signed agreement this node drew up, with a fresh pseudonym key.

        Raises:
            AgreementError: the id exists already.
        """
        now = int(time.time())
        with self._lock:
            try:
                self._db.execute(
                    _INSERT,
                    (
                        signed.id,
                        signed.provider,
                        signed.consumer,
                        signed.dataset,
                        "proposed",
                        signed.to_bytes(),
                        os.urandom(32),
                        now,
                    ),
                )
            except sqlite3.IntegrityError as e:
                raise AgreementError(f"agreement {signed.id} already exists") from e
        return self.get(signed.id)

    def activate(self, signed: SignedAgreement) -> AgreementRecord:
        """Store a countersigned agreement as active (signatures verified by the caller).

        Raises:
            AgreementError: not countersigned, revoked already, or a different
                document under the same id.
        """
        if signed.consumer_signature is None:
            raise AgreementError(f"agreement {signed.id} is not countersigned")
        now = int(time.time())
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM agreements WHERE id = ?",  # noqa: S608
                (signed.id,),
            ).fetchone()
            if row is None:
                self._db.execute(
                    _INSERT,
                    (
                        signed.id,
                        signed.provider,
                        signed.consumer,
                        signed.dataset,
                        "active",
                        signed.to_bytes(),
                        None,
                        now,
                    ),
                )
            else:
                held = self._record(row)
                if held.signed.doc != signed.doc or (
                    held.signed.provider_signature != signed.provider_signature
                ):
                    raise AgreementError(
                        f"agreement {signed.id} differs from the copy this node holds",
                        hint="the file was altered, or belongs to another agreement",
                    )
                if held.state == "revoked":
                    raise AgreementError(f"agreement {signed.id} was revoked; it cannot return")
                self._db.execute(
                    "UPDATE agreements SET state='active', signed=?, updated=? WHERE id=?",
                    (signed.to_bytes(), now, signed.id),
                )
        return self.get(signed.id)

    def revoke(self, agreement_id: str, reason: str) -> AgreementRecord:
        """Mark the agreement revoked; durable on return.

        Raises:
            AgreementError: no such agreement, or it is already revoked.
        """
        now = int(time.time())
        with self._lock:
            cursor = self._db.execute(
                "UPDATE agreements SET state='revoked', revoked_at=?, reason=?, updated=? "
                "WHERE id=? AND state != 'revoked'",
                (now, reason, now, agreement_id),
            )
            changed = cursor.rowcount
        if not changed:
            record = self.get(agreement_id)
            raise AgreementError(
                f"agreement {agreement_id} was already revoked at {utc_text(record.revoked_at)}",
                hint="see 'fednode agreement show ID'",
            )
        return self.get(agreement_id)

    def erase_reason(self, agreement_id: str) -> AgreementRecord:
        """Erase a revoked agreement's reason for good; safe to run again.

        The record keeps its state and revocation time and gains the time of
        the erasure (the first one, when run again). Returns once the text is
        gone from the file and its WAL.

        Raises:
            AgreementError: no such agreement, or it is not revoked.
            BusyError: another process held the file open for the whole busy
                wait, so its WAL cannot be emptied (run it again once it is closed).
        """
        record = self.get(agreement_id)
        if record.state != "revoked":
            raise AgreementError(f"agreement {agreement_id} is {record.state}, it has no reason")
        now = int(time.time())
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE agreements SET reason=NULL, reason_erased=COALESCE(reason_erased, ?) "
                    "WHERE id=?",
                    (now, agreement_id),
                )
                self._db.execute("VACUUM")
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as e:
                raise AgreementError(
                    f"cannot erase the reason of agreement {agreement_id}: {e}",
                    hint="run the erasure again",
                ) from e
        if busy:
            raise BusyError(
                f"the reason of agreement {agreement_id} is erased, but another process holds "
                "the agreement store open, so an old copy may remain in its -wal file",
                hint="close the other program (for example an sqlite3 shell), then run the "
                "erasure again",
            )
        return self.get(agreement_id)
