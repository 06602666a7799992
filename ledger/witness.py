"""Witnessing peer logs: check consistency, persist the new view, then cosign.

A witness keeps, for every log origin it watches, the last ``(size, root)`` it
cosigned. :meth:`Witness.add_checkpoint` follows C2SP tlog-witness:

1. the checkpoint must carry a valid signature by the log's key, taken from the
   federation directory (never from the request);
2. the submitter's ``old_size`` must equal the size the witness holds
   (otherwise :class:`WitnessConflictError`, carrying the witness's size, so an
   honest log can retry with the right proof);
3. a smaller size is a rollback and a different root at the same size, or a
   consistency proof that does not verify, is a fork; both are incidents;
4. the new view is persisted atomically (one SQLite transaction with
   ``synchronous=FULL``, compare-and-swap on the old view) *before* the
   cosignature is returned, so a crash can never make the witness cosign two
   inconsistent checkpoints.

A witness vouches only for what a tree can be: a size it can store (at most
:data:`MAX_TREE_SIZE`) and, for size 0, the empty tree's root. The state file
and its directory are synced when created, so a power loss cannot take the
persisted view with them.

Invariant: the stored view of an origin only ever grows along one consistent
history.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.checkpoint import (
    ED25519_TYPE,
    Checkpoint,
    SignatureLine,
    cosign,
    key_id,
    parse_checkpoint,
    parse_note,
    verify_checkpoint,
)
from ledger.errors import (
    CheckpointError,
    LedgerDamageError,
    ProofError,
    StorageError,
    WitnessError,
)
from ledger.merkle import EMPTY_ROOT, verify_consistency
from ledger.store import durable_directory, sync_directory

__all__ = [
    "ForkError",
    "RollbackError",
    "UnknownLogError",
    "Witness",
    "WitnessConflictError",
    "WitnessState",
]

_SCHEMA_VERSION = 1
#: The largest tree size a witness holds: SQLite stores signed 64-bit integers.
#: A checkpoint note may say up to 19 digits, and a log can make a consistency
#: proof to any size it likes, so a larger size is refused, not stored.
MAX_TREE_SIZE = 2**63 - 1


class UnknownLogError(WitnessError):
    """The checkpoint's origin is not a log this witness knows a key for."""


class WitnessConflictError(WitnessError):
    """The submitter's old size is not the size the witness holds."""

    def __init__(self, message: str, *, witness_size: int) -> None:
        super().__init__(message)
        self.witness_size = witness_size


class ForkError(WitnessError):
    """The checkpoint is inconsistent with the history the witness cosigned."""

    def __init__(self, message: str, *, origin: str, size: int, evidence: bytes) -> None:
        super().__init__(message)
        self.origin = origin
        self.size = size
        self.evidence = evidence


class RollbackError(ForkError):
    """The checkpoint is smaller than one the witness already cosigned."""


class WitnessState:
    """The witness's view ``origin -> (size, root)`` in its own SQLite file."""

    def __init__(self, path: Path) -> None:
        """Open or create the state file.

        Raises:
            StorageError: the file is unreadable or of an unknown schema version.
        """
        self.path = Path(path)
        durable_directory(self.path.parent)
        created = not self.path.exists()
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as e:
            raise StorageError(f"witness state {self.path} cannot be opened: {e}") from e
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS views (origin TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                " root BLOB NOT NULL, note BLOB NOT NULL, updated INTEGER NOT NULL)"
            )
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(_SCHEMA_VERSION),),
            )
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._conn.close()
            raise StorageError(f"witness state {self.path} is unreadable: {e}") from e
        if created:
            # A view persisted in a file whose name a power loss can take is not
            # persisted: the witness would come back empty and cosign a fork.
            sync_directory(self.path.parent)
        if row[0] != str(_SCHEMA_VERSION):
            self._conn.close()
            raise StorageError(
                f"witness state {self.path} has schema version {row[0]!r}, "
                f"expected {_SCHEMA_VERSION}"
            )

    def get(self, origin: str) -> tuple[int, bytes] | None:
        """Return the held ``(size, root)`` for ``origin``, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT size, root FROM views WHERE origin=?", (origin,)
            ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def held_note(self, origin: str) -> bytes | None:
        """Return the note of the held view of ``origin`` (the last one cosigned), or None."""
        with self._lock:
            row = self._conn.execute("SELECT note FROM views WHERE origin=?", (origin,)).fetchone()
        return None if row is None else bytes(row[0])

    def views(self) -> dict[str, tuple[int, bytes]]:
        """Return every held view."""
        with self._lock:
            rows = self._conn.execute("SELECT origin, size, root FROM views").fetchall()
        return {r[0]: (r[1], bytes(r[2])) for r in rows}

    def compare_and_set(
        self, origin: str, old: tuple[int, bytes] | None, new: tuple[int, bytes], note: bytes
    ) -> None:
        """Replace the view of ``origin`` with ``new`` if it still equals ``old``.

        The new view is durable when this returns.

        Raises:
            WitnessConflictError: the view changed since ``old`` was read.
            StorageError: the transaction failed.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(
                    "SELECT size, root FROM views WHERE origin=?", (origin,)
                ).fetchone()
                current = None if row is None else (row[0], bytes(row[1]))
                if current != old:
                    conn.execute("ROLLBACK")
                    size = 0 if current is None else current[0]
                    raise WitnessConflictError(
                        f"witness view of {origin} changed to size {size}", witness_size=size
                    )
                conn.execute(
                    "INSERT INTO views(origin, size, root, note, updated) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(origin) DO UPDATE SET size=excluded.size, root=excluded.root,"
                    " note=excluded.note, updated=excluded.updated",
                    (origin, new[0], new[1], note, int(time.time())),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"witness state {self.path}: {e}") from e

    def close(self) -> None:
        """Close the state file."""
        with self._lock:
            self._conn.close()


class Witness:
    """Cosigns checkpoints of peer logs that extend the history it has seen."""

    def __init__(
        self,
        state: WitnessState,
        name: str,
        key: Ed25519PrivateKey,
        log_key: Callable[[str], Ed25519PublicKey | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a witness named ``name`` signing with ``key``.

        ``log_key(origin)`` returns the log's Ed25519 key from the federation
        directory, or None when the origin is unknown.
        """
        self.state = state
        self.name = name
        self._key = key
        self._log_key = log_key
        self._clock = clock
        self._lock = threading.Lock()

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> SignatureLine:
        """Verify ``note`` against the held view and return this witness's cosignature.

        Raises:
            UnknownLogError: the origin has no key in the directory.
            WitnessError: the checkpoint is malformed or badly signed, its size
                is above :data:`MAX_TREE_SIZE`, or it gives size 0 a root other
                than the empty tree's.
            WitnessConflictError: ``old_size`` is not the size this witness holds.
            RollbackError: the checkpoint is smaller than the held view.
            ForkError: same size with another root, or the consistency
                proof does not verify.
            LedgerDamageError: the held view is damaged (its note does not
                parse, or does not verify under the key it names); nothing is
                cosigned until the state is restored.
            StorageError: the new view could not be persisted.
        """
        try:
            origin = parse_checkpoint(parse_note(note).text).origin
        except CheckpointError as e:
            raise WitnessError(f"checkpoint is malformed: {e}") from e
        log_key = self._log_key(origin)
        if log_key is None:
            raise UnknownLogError(f"no log key is known for origin {origin!r}")
        try:
            checkpoint = verify_checkpoint(note, origin, log_key)
        except CheckpointError as e:
            raise WitnessError(f"checkpoint of {origin} is not validly signed: {e}") from e
        if checkpoint.size > MAX_TREE_SIZE:
            raise WitnessError(
                f"checkpoint of {origin} has size {checkpoint.size}, above the largest "
                f"a witness holds ({MAX_TREE_SIZE})"
            )
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            # Every empty tree has the same root (RFC 9162): another one is no
            # tree at all, and nothing a witness may vouch for.
            raise WitnessError(
                f"checkpoint of {origin} gives size 0 a root other than the empty tree's"
            )
        # One submission at a time: the check and the compare-and-swap below
        # must see the same view.
        with self._lock:
            self._check(checkpoint, old_size, proof, note, log_key)
            return cosign(checkpoint.text, self.name, self._key, int(self._clock()))

    def _held(
        self, origin: str, log_key: Ed25519PublicKey
    ) -> tuple[tuple[int, bytes] | None, bool]:
        """The view held for ``origin`` and whether it is of the log ``log_key`` signs.

        A department that enrolled again (after a key compromise, say) starts a
        new log under a new key, which the authority's signed directory names.
        The view held from its old key is not that log's history: holding the
        new log to it would refuse every checkpoint of the new log as a
        rollback. Only the directory can change the key, so a log cannot shed
        its history this way on its own.
        """
        held = self.state.get(origin)
        note = self.state.held_note(origin)
        if held is None or note is None:
            return held, True
        where = f"witness state {self.state.path}: the held checkpoint of {origin}"
        try:
            parsed = parse_note(note)
        except CheckpointError as e:
            raise LedgerDamageError(f"{where} is damaged: {e}") from e
        # The held size and root are what the witness holds the log to; the
        # note only tells which key's log they are of. Only a note that carries
        # no signature under the directory's key is of another log. A note that
        # claims that key and fails to verify is damage: taking it for a new
        # key would drop the view and let the witness cosign a fork of what it
        # already cosigned.
        kid = key_id(origin, ED25519_TYPE, log_key)
        if not any(s.name == origin and s.key_id == kid for s in parsed.signatures):
            return held, False
        try:
            verify_checkpoint(note, origin, log_key)
        except CheckpointError as e:
            raise LedgerDamageError(f"{where} is damaged: {e}") from e
        return held, True

    def _check(
        self,
        cp: Checkpoint,
        old_size: int,
        proof: Sequence[bytes],
        note: bytes,
        log_key: Ed25519PublicKey,
    ) -> None:
        stored, same_log = self._held(cp.origin, log_key)
        # A view of a previous key is replaced (compare-and-swap on it) as if none were held.
        held = stored if same_log else None
        held_size, held_root = held if held is not None else (0, b"")
        if cp.size < held_size:
            raise RollbackError(
                f"{cp.origin} rolled back: checkpoint size {cp.size} is below the cosigned "
                f"size {held_size}",
                origin=cp.origin,
                size=cp.size,
                evidence=note,
            )
        if old_size != held_size:
            raise WitnessConflictError(
                f"old size {old_size} does not match the witness's size {held_size} "
                f"for {cp.origin}",
                witness_size=held_size,
            )
        if held is not None and cp.size == held_size:
            if cp.root != held_root:
                raise ForkError(
                    f"{cp.origin} forked: a second root for size {cp.size}",
                    origin=cp.origin,
                    size=cp.size,
                    evidence=note,
                )
            return
        if held_size > 0:
            try:
                verify_consistency(held_size, cp.size, proof, held_root, cp.root)
            except ProofError as e:
                raise ForkError(
                    f"{cp.origin} forked: checkpoint size {cp.size} is not consistent with "
                    f"cosigned size {held_size}: {e}",
                    origin=cp.origin,
                    size=cp.size,
                    evidence=note,
                ) from e
        elif proof:
            raise WitnessError(f"a first checkpoint of {cp.origin} must come without a proof")
        self.state.compare_and_set(cp.origin, stored, (cp.size, cp.root), note)
