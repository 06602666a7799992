"""The ledger store: SQLite in WAL mode, one writer thread, group commit.

Invariants:

* Entries are never rewritten. ``seq`` is dense from 0, each entry's ``prev``
  is the leaf hash of the one before, and ``leaf = SHA-256(0x00 || body)``.
* :meth:`LedgerStore.append` returns only after the transaction holding its
  entry has committed with ``synchronous=FULL``: an acknowledged append is on
  disk. Callers in many threads are batched into one transaction (group commit)
  by the single writer thread, which is the only connection that writes.
* The ``nodes`` table caches the hash of every complete, aligned subtree
  (level >= 1), written in the same transaction as the leaves that finish it,
  so roots and proofs for any size cost O(log n) lookups. It is a cache:
  signing recomputes the root from the stored leaves, and fsck rebuilds it.
* The store never signs two different roots for one size, nor a size below
  the last one it signed: the ``signed`` row is a compare-and-swap record
  updated in the same transaction as the new checkpoint.
* Sensitive values and their salts live only in ``secrets``; erasing a row
  (crypto-shredding) changes no entry, leaf or proof.
* The schema carries a version; a file with any other version is refused.
* Damage to the file itself (missing or corrupt entries, a file SQLite cannot
  read as a database, a signing record ahead of the stored checkpoints) is
  reported as :class:`LedgerDamageError`, never as a configuration problem:
  the fix is a restore from backup, not a settings change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.canonical import loads
from ledger.checkpoint import (
    SignatureLine,
    add_signatures,
    cosignatures,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
)
from ledger.entry import (
    GENESIS_PREV,
    commitment,
    parse_entry,
    prepare_entry,
)
from ledger.errors import (
    CheckpointError,
    EntryError,
    LedgerDamageError,
    LedgerError,
    StorageError,
)
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    hash_children,
    inclusion_proof,
    root_from_leaves,
)

# The directory helpers are shared with the witness state and the node's
# recorder, but are not part of the ledger's pinned public names.
__all__ = ["SCHEMA_VERSION", "Erasure", "FsckReport", "LedgerStore", "StoredCheckpoint"]

SCHEMA_VERSION = 1
_MAX_BATCH = 4096
#: How long the writer waits for the next caller before committing a batch.
_LINGER_GAP = float(os.environ.get("FEDNODE_LEDGER_LINGER_GAP", "0.0002"))
#: The longest the first append of a batch waits for others to join it.
_LINGER_MAX = float(os.environ.get("FEDNODE_LEDGER_LINGER_MAX", "0.002"))
#: How long a connection waits for a lock held by another process (a backup, fsck).
_BUSY_TIMEOUT_S = 30
#: How long an erasure waits for a reader of an old snapshot before it reports the
#: write-ahead log as still holding the value: the node's appends wait meanwhile.
_ERASE_BUSY_MS = 500
_SALT_LEN = 16
_WAL_CHECKPOINT_PAGES = 4000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY, body BLOB NOT NULL, leaf BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    seq INTEGER NOT NULL, path TEXT NOT NULL, salt BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (seq, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signed (
    id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, root BLOB NOT NULL);
"""

T = TypeVar("T")

#: SQLite's primary result codes for a file that is damaged or not a database at all.
_SQLITE_DAMAGE_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


def _is_damage(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_DAMAGE_CODES


def _storage_error(message: str, error: sqlite3.Error) -> StorageError:
    kind = LedgerDamageError if _is_damage(error) else StorageError
    return kind(f"{message}: {error}")


#: The tables of the schema; a store missing one is damaged.
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def _blob(value: object, what: str) -> bytes:
    """Return a BLOB column's value; anything else (TEXT, INTEGER, NULL) is damage.

    Raises:
        LedgerDamageError: ``value`` is not bytes; ``what`` names the row and column.
    """
    if type(value) is not bytes:
        raise LedgerDamageError(f"{what} is stored as {type(value).__name__}, not as bytes")
    return value


def sync_directory(directory: Path) -> None:
    """fsync ``directory``, so the entries created in it survive a power loss.

    Raises:
        StorageError: the directory cannot be opened or synced.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StorageError(f"cannot sync directory {directory}: {e}") from e


def durable_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents so that a power loss keeps them.

    ``mkdir`` changes its parent's entries only in memory: until the parent is
    synced, a power loss can take the new directory, and every file committed
    in it since, with it. Each parent that gained an entry is synced.

    Raises:
        StorageError: a directory cannot be created or synced.
    """
    missing = []
    current = directory
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create directory {directory}: {e}") from e
    for created in reversed(missing):
        sync_directory(created.parent)


def _entry_pages(conn: sqlite3.Connection, size: int) -> Iterator[tuple[Any, Any, Any]]:
    """Yield the raw ``(seq, body, leaf)`` rows of entries ``0..size-1`` in pages."""
    start, page = 0, 10_000
    while start < size:
        rows = conn.execute(
            "SELECT seq, body, leaf FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, min(size, start + page)),
        ).fetchall()
        if not rows:
            return
        yield from rows
        start = rows[-1][0] + 1


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint the store signed, with every cosignature gathered so far."""

    size: int
    root: bytes
    note: bytes


@dataclass
class FsckReport:
    """What :meth:`LedgerStore.fsck` checked."""

    size: int
    root: bytes
    checkpoints: int
    nodes: int
    secrets: int
    erased: int = 0
    problems: list[str] = field(default_factory=list)


class _Append:
    """One queued append; its caller blocks on ``done`` until the writer releases it.

    A bare lock is the cheapest wake-up CPython offers, and with thousands of
    appends a second the per-append overhead is what bounds throughput.
    """

    __slots__ = ("done", "error", "fields", "result", "sensitive")

    def __init__(self, fields: Mapping[str, Any], sensitive: frozenset[str]) -> None:
        self.fields = fields
        self.sensitive = sensitive
        self.result: tuple[int, bytes] | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def set_result(self, result: tuple[int, bytes]) -> None:
        self.result = result
        self.done.release()

    def set_exception(self, error: BaseException) -> None:
        self.error = error
        self.done.release()


@dataclass
class _Staged:
    """Appends sequenced by the writer but not yet committed (see ``LedgerStore._stage``)."""

    saved: CompactRange  #: the tree before staging, restored if the commit fails
    rows: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    secrets: list[tuple[int, str, bytes, bytes]] = field(default_factory=list)
    accepted: list[tuple[_Append, int, bytes]] = field(default_factory=list)
    #: ``(size, last leaf, last time)`` once the rows are committed
    tip: tuple[int, bytes | None, int] = (0, None, 0)


@dataclass
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


_STOP = object()


@dataclass(frozen=True)
class Erasure:
    """What :meth:`LedgerStore.erase` did."""

    deleted: bool  #: the value was stored and is now deleted (False: already gone)
    #: the write-ahead log was emptied, so no old page image holds the value; False
    #: while another process reads an older snapshot (run the erasure again)
    wal_truncated: bool
    #: the seq of the entry recording the erasure, committed with the deletion
    #: (None: no record was asked for)
    recorded: int | None = None


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_S
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Deleted rows are zeroed, not just unlinked: the only rows the ledger ever
        # deletes are erased sensitive values, which must not stay in free space.
        conn.execute("PRAGMA secure_delete=ON")
        # Checkpoint the WAL into the main file every ~16 MiB rather than every
        # 4 MiB: a checkpoint runs inside the commit that crosses the limit
        # and holds up that whole group. Durability is unchanged: every commit
        # still syncs the WAL before it returns.
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
    except sqlite3.Error as e:
        raise _storage_error(f"cannot open ledger store {path}", e) from e
    return conn


class LedgerStore:
    """An append-only ledger in one SQLite file, written by one thread."""

    def __init__(self, path: Path, node: str, *, clock: Callable[[], int] | None = None) -> None:
        """Open (creating if needed) the store at ``path`` for department ``node``.

        Raises:
            LedgerDamageError: the file is not a readable database, has gaps
                in its entries, or its last entry is corrupt.
            StorageError: the file cannot be opened, is of another schema
                version, or belongs to another department.
        """
        self.path = Path(path)
        self.node = node
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        durable_directory(self.path.parent)
        self._read = _connect(self.path)
        self._read_lock = threading.Lock()
        self._read_closed = False
        try:
            self._init_schema()
            self._load_state()
        except sqlite3.Error as e:
            self._read.close()
            raise _storage_error(f"ledger store {self.path} is unreadable", e) from e
        except LedgerError:
            self._read.close()
            raise
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._put_lock = threading.Lock()
        self._inflight: list[Any] = []
        # Taken by the writer thread before its first write and held until close():
        # a store that only reads (fsck next to a running node) never takes it.
        self._lock_fd: int | None = None
        self._writer = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._writer.start()

    # -- opening -------------------------------------------------------------------------

    def _init_schema(self) -> None:
        conn = self._read
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or row[0] != str(SCHEMA_VERSION):
                found = None if row is None else row[0]
                raise StorageError(
                    f"ledger store {self.path} has schema version {found!r}; "
                    f"this fednode reads version {SCHEMA_VERSION}"
                )
            owner = conn.execute("SELECT value FROM meta WHERE key='node'").fetchone()
            if owner is None or owner[0] != self.node:
                raise StorageError(
                    f"ledger store {self.path} belongs to {owner and owner[0]!r}, not {self.node!r}"
                )
            self._check_tables(conn)
            return
        if tables:
            raise StorageError(f"{self.path} is an SQLite file but not a fednode ledger")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?), ('node', ?)",
            (str(SCHEMA_VERSION), self.node),
        )
        conn.execute("COMMIT")
        # The file was just created: its name must be as durable as its first
        # commit, or a power loss could leave a directory without the ledger.
        sync_directory(self.path.parent)

    def _load_state(self) -> None:
        conn = self._read
        row = conn.execute("SELECT MAX(seq), COUNT(*) FROM entries").fetchone()
        size = 0 if row[0] is None else row[0] + 1
        if size != row[1]:
            raise LedgerDamageError(
                f"ledger store {self.path} has gaps: {row[1]} entries up to seq {size - 1}"
            )
        self._size = size
        self._last_leaf: bytes | None = None
        self._last_time = 0
        if size:
            body, leaf = conn.execute(
                "SELECT body, leaf FROM entries WHERE seq=?", (size - 1,)
            ).fetchone()
            self._last_leaf = _blob(leaf, f"ledger store {self.path}: entry seq {size - 1}: leaf")
            try:
                self._last_time = parse_entry(
                    _blob(body, f"ledger store {self.path}: entry seq {size - 1}: body")
                ).fields["time"]
            except EntryError as e:
                raise LedgerDamageError(
                    f"ledger store {self.path}: last entry (seq {size - 1}) is corrupt: {e}"
                ) from e
        self._range = CompactRange.from_subtrees(size, self._subtree_hashes(conn, size))

    def _subtree_hashes(self, conn: sqlite3.Connection, size: int) -> list[bytes]:
        hashes = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                try:
                    hashes.append(self._node(conn, level, start >> level))
                except StorageError:
                    # A damaged cache must not stop the store from opening,
                    # or fsck could never report it: use the leaves instead.
                    leaves = conn.execute(
                        "SELECT leaf FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
                        (start, start + (1 << level)),
                    ).fetchall()
                    hashes.append(root_from_leaves([bytes(r[0]) for r in leaves]))
                start += 1 << level
        return hashes

    def _node(self, conn: sqlite3.Connection, level: int, idx: int) -> bytes:
        if level == 0:
            row = conn.execute("SELECT leaf FROM entries WHERE seq=?", (idx,)).fetchone()
        else:
            row = conn.execute(
                "SELECT hash FROM nodes WHERE level=? AND idx=?", (level, idx)
            ).fetchone()
        if row is None:
            raise StorageError(
                f"ledger store {self.path} lacks tree node level {level} index {idx}"
            )
        return _blob(row[0], f"ledger store {self.path}: tree node level {level} index {idx}")

    # -- the writer ----------------------------------------------------------------------

    def _run(self) -> None:
        conn = _connect(self.path)
        try:
            self._serve(conn)
        except BaseException as e:
            # An unexpected failure leaves the in-memory tree state unknown:
            # refuse all further work rather than append on top of it.
            error = StorageError(f"ledger store {self.path}: writer stopped: {e!r}")
            with self._put_lock:
                self._closed = True
            self._fail_queued(error)
            raise
        finally:
            conn.close()

    def _fail_queued(self, error: StorageError) -> None:
        for item in self._inflight:
            if isinstance(item, _Append) and item.result is None and item.error is None:
                item.set_exception(error)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Append):
                item.set_exception(error)
            elif isinstance(item, _Job) and not item.future.done():
                item.future.set_exception(error)

    def _take_writer_lock(self) -> None:
        """Become the only writer of this ledger file, across processes.

        A second writer's in-memory tip (size, last leaf, tree) would go stale
        as soon as the first one commits. The lock is an exclusive flock on
        ``<ledger>.lock``, which the kernel releases when its holder exits.
        Entries committed between opening and locking are read in again.

        Raises:
            StorageError: another process (or store) holds the lock.
        """
        lock_path = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StorageError(f"ledger store {self.path}: cannot open {lock_path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise StorageError(
                f"ledger store {self.path} is being written by another fednode process "
                f"(it holds {lock_path}); stop that process, or ask it to do this"
            ) from e
        self._lock_fd = fd
        with self._read_lock:
            try:
                self._load_state()
            except sqlite3.Error as e:
                raise _storage_error(f"ledger store {self.path} is unreadable", e) from e

    def _refuse(self, item: object, error: StorageError) -> None:
        if isinstance(item, _Append):
            item.set_exception(error)
        elif isinstance(item, _Job) and not item.future.done():
            item.future.set_exception(error)

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._lock_fd is None:
                try:
                    self._take_writer_lock()
                except StorageError as e:
                    self._refuse(item, e)
                    continue
            if isinstance(item, _Job):
                self._run_job(conn, item)
                continue
            batch = [item]
            self._inflight = batch
            stop = False
            deadline = time.monotonic() + _LINGER_MAX
            while len(batch) < _MAX_BATCH:
                # Group commit: keep collecting while callers keep arriving,
                # so one fsync covers as many appends as possible, but never
                # hold the first one back for long. The writer sleeps and
                # then drains the queue rather than waiting on it: a waiting
                # writer would be woken (and take the interpreter lock) once
                # per append, a sleeping one once per gap.
                if time.monotonic() >= deadline:
                    break
                time.sleep(_LINGER_GAP)
                arrived = len(batch)
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    if isinstance(nxt, _Job):
                        self._commit_batch(conn, batch)
                        batch = []
                        self._inflight = batch
                        self._run_job(conn, nxt)
                        continue
                    batch.append(nxt)
                if stop or len(batch) == arrived:
                    break
            if batch:
                self._commit_batch(conn, batch)
            self._inflight = []
            if stop:
                return

    def _run_job(self, conn: sqlite3.Connection, job: _Job) -> None:
        try:
            job.future.set_result(job.run(conn))
        except BaseException as e:  # noqa: BLE001 -- the caller's thread re-raises it.
            if isinstance(e, sqlite3.Error):
                e = _storage_error(f"ledger store {self.path}", e)
            # A job that failed inside its transaction (a full disk during an
            # erasure, say) must not leave it open: the next batch of appends
            # would fail to begin its own and be refused.
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            job.future.set_exception(e)

    def _stage(self, batch: list[Any]) -> _Staged:
        """Sequence ``batch`` after the committed tip: its rows, tree nodes and secrets.

        Requests whose fields make no entry are failed here and left out. The
        in-memory tree advances; :meth:`_adopt` keeps it once the rows are
        committed, and ``saved`` restores it if they are not.
        """
        size, last_leaf, last_time = self._size, self._last_leaf, self._last_time
        staged = _Staged(saved=CompactRange.from_subtrees(self._range.size, self._range.subtrees()))
        rows, nodes, secrets, accepted = (
            staged.rows,
            staged.nodes,
            staged.secrets,
            staged.accepted,
        )
        clock = self._clock
        sha256 = hashlib.sha256

        def on_node(level: int, idx: int, digest: bytes) -> None:
            nodes.append((level, idx, digest))

        for req in batch:
            entry_time = max(clock(), last_time)
            try:
                prepared = prepare_entry(self.node, req.fields, req.sensitive)
            except LedgerError as e:
                req.set_exception(e)
                continue
            except Exception as e:  # noqa: BLE001 -- one caller's input fails only its append.
                # Escaping here would stop the writer, and with it every later
                # append of the process: one bad value must not close the ledger.
                refused = EntryError(f"entry cannot be encoded: {e!r}")
                refused.__cause__ = e
                req.set_exception(refused)
                continue
            body = prepared.render(size, entry_time, last_leaf)
            leaf = sha256(b"\x00" + body).digest()
            rows.append((size, body, leaf))
            for path, salt, value in prepared.secrets:
                secrets.append((size, path, salt, value))
            self._range.append(leaf, on_node)
            accepted.append((req, size, leaf))
            size, last_leaf, last_time = size + 1, leaf, entry_time
        staged.tip = (size, last_leaf, last_time)
        return staged

    @staticmethod
    def _write_staged(conn: sqlite3.Connection, staged: _Staged) -> None:
        """Insert staged rows inside the caller's open transaction."""
        conn.executemany("INSERT INTO entries(seq, body, leaf) VALUES (?, ?, ?)", staged.rows)
        conn.executemany("INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?)", staged.nodes)
        if staged.secrets:
            conn.executemany(
                "INSERT INTO secrets(seq, path, salt, value) VALUES (?, ?, ?, ?)", staged.secrets
            )

    def _adopt(self, staged: _Staged) -> None:
        """The staged rows are committed: move the tip and release their callers."""
        self._size, self._last_leaf, self._last_time = staged.tip
        for req, seq, leaf in staged.accepted:
            req.set_result((seq, leaf))

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        staged = self._stage(batch)
        if not staged.rows:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._write_staged(conn, staged)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._range = staged.saved
            error = StorageError(f"ledger store {self.path}: append not committed: {e}")
            for req, _, _ in staged.accepted:
                req.set_exception(error)
            return
        self._adopt(staged)

    def _put(self, item: object) -> None:
        # The check and the put happen under one lock, and close() queues the
        # stop marker under it too, so nothing is ever queued behind the stop
        # marker where no writer would answer it.
        with self._put_lock:
            if self._closed:
                raise StorageError(f"ledger store {self.path} is closed")
            self._queue.put(item)

    def _submit(self, run: Callable[[sqlite3.Connection], T]) -> T:
        future: Future[T] = Future()
        self._put(_Job(run, future))
        return future.result()

    # -- appending -----------------------------------------------------------------------

    def append(self, fields: Mapping[str, Any], sensitive: Iterable[str] = ()) -> tuple[int, bytes]:
        """Record one entry and return ``(seq, leaf hash)`` once it is durable.

        ``fields`` holds the event fields (``event`` and any of actor, peer,
        agreement, dataset, columns, purpose, digest, outcome, detail); the
        store fills in v, seq, time, node, prev and sensitive. Paths in
        ``sensitive`` (top-level names or ``detail.<key>``) are committed.

        Raises:
            EntryError: the fields do not make a valid entry.
            StorageError: the store is closed or the commit failed.
        """
        request = _Append(fields, frozenset(sensitive))
        self._put(request)
        request.done.acquire()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    # -- reading -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of committed entries."""
        return self._size

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._read_lock:
            try:
                return self._read.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise _storage_error(f"ledger store {self.path}", e) from e

    def entry(self, seq: int) -> bytes:
        """Return the canonical bytes of entry ``seq``.

        Raises:
            StorageError: there is no such entry.
        """
        rows = self._query("SELECT body FROM entries WHERE seq=?", (seq,))
        if not rows:
            raise StorageError(f"ledger has no entry seq {seq} (size {self._size})")
        return _blob(rows[0][0], f"ledger store {self.path}: entry seq {seq}: body")

    def iter_entries(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield ``(seq, body, leaf)`` for ``start <= seq < end`` in order, in pages."""
        end = self._size if end is None else end
        page = 10_000
        while start < end:
            rows = self._query(
                "SELECT seq, body, leaf FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
                (start, min(end, start + page)),
            )
            if not rows:
                return
            for seq, body, leaf in rows:
                where = f"ledger store {self.path}: entry seq {seq}"
                yield seq, _blob(body, f"{where}: body"), _blob(leaf, f"{where}: leaf")
            start = rows[-1][0] + 1

    def node_hash(self, start: int, end: int) -> bytes:
        """Return MTH(D[start:end]) from cached complete subtrees.

        Raises:
            StorageError: a cached node is missing.
        """
        n = end - start
        if n == 1:
            return self._lookup(0, start)
        if n & (n - 1) == 0 and start % n == 0:
            return self._lookup(n.bit_length() - 1, start // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return hash_children(self.node_hash(start, start + k), self.node_hash(start + k, end))

    def _lookup(self, level: int, idx: int) -> bytes:
        with self._read_lock:
            try:
                return self._node(self._read, level, idx)
            except sqlite3.Error as e:
                raise StorageError(f"ledger store {self.path}: {e}") from e

    def root(self, size: int | None = None) -> bytes:
        """Return the Merkle root over the first ``size`` entries (default: all).

        Raises:
            StorageError: ``size`` exceeds the ledger or a cached node is missing.
        """
        size = self._size if size is None else size
        if size > self._size or size < 0:
            raise StorageError(f"ledger has {self._size} entries, cannot give the root of {size}")
        return EMPTY_ROOT if size == 0 else self.node_hash(0, size)

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """Return the inclusion proof of entry ``seq`` in the tree of ``size``.

        Raises:
            ProofError: ``seq`` is not below ``size``.
            StorageError: ``size`` exceeds the ledger.
        """
        if size > self._size:
            raise StorageError(f"ledger has {self._size} entries, cannot prove in size {size}")
        return inclusion_proof(seq, size, self.node_hash)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Return the consistency proof from ``old_size`` to ``new_size``.

        Raises:
            ProofError: the sizes are not ``0 < old_size <= new_size``.
            StorageError: ``new_size`` exceeds the ledger.
        """
        if new_size > self._size:
            raise StorageError(f"ledger has {self._size} entries, cannot prove size {new_size}")
        return consistency_proof(old_size, new_size, self.node_hash)

    def reveal(self, seq: int, path: str) -> Any:
        """Return the value behind a sensitive field, or raise if it was erased.

        Raises:
            StorageError: there is no stored value (never sensitive, or erased).
        """
        rows = self._query("SELECT value FROM secrets WHERE seq=? AND path=?", (seq, path))
        if not rows:
            raise StorageError(f"entry seq {seq} holds no stored value for {path!r} (erased?)")
        return loads(bytes(rows[0][0]))

    # -- erasure -------------------------------------------------------------------------

    def erase(
        self,
        seq: int,
        path: str,
        *,
        missing_ok: bool = False,
        record: Mapping[str, Any] | None = None,
    ) -> Erasure:
        """Crypto-shred a sensitive value: delete its value and salt for good, from the
        file's bytes too.

        Safe to run again: with ``missing_ok`` a value already deleted (by a run
        cut short, say) is not an error, and the write-ahead log is truncated
        again, which a run cut short may not have done.

        With ``record`` (event fields, as for :meth:`append`), the entry
        recording the erasure is committed in the same transaction as the
        deletion: a crash can never leave a value erased without its record,
        nor a record of an erasure that did not happen.

        Raises:
            StorageError: the entry has no stored value at ``path`` (unless
                ``missing_ok``), or the deletion was not committed.
            EntryError: ``record`` does not make a valid entry; nothing is erased.
        """
        request = None if record is None else _Append(record, frozenset())

        def run(conn: sqlite3.Connection) -> Erasure:
            staged = None
            if request is not None:
                staged = self._stage([request])
                if not staged.rows:
                    assert request.error is not None
                    raise request.error
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute("DELETE FROM secrets WHERE seq=? AND path=?", (seq, path))
                deleted = cur.rowcount == 1
                if not deleted and not missing_ok:
                    raise StorageError(f"entry seq {seq} holds no stored value for {path!r}")
                if staged is not None:
                    self._write_staged(conn, staged)
                conn.execute("COMMIT")
            except BaseException:
                if staged is not None:
                    self._range = staged.saved
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if staged is not None:
                self._adopt(staged)
            # secure_delete zeroed the value in the page the delete wrote, but the WAL
            # still holds the page images written when the value was inserted. Copying
            # the zeroed page into the main file and truncating the WAL removes the last
            # copy from the files. A reader holding an old snapshot blocks that; wait for
            # it only briefly, since every append of the node queues behind this writer.
            conn.execute(f"PRAGMA busy_timeout={_ERASE_BUSY_MS}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
            return Erasure(
                deleted=deleted,
                wal_truncated=not busy,
                recorded=None if staged is None else staged.rows[0][0],
            )

        return self._submit(run)

    def stored_values(self) -> list[tuple[int, str]]:
        """``(seq, path)`` of every sensitive value still stored (not erased), in order."""
        rows = self._query("SELECT seq, path FROM secrets ORDER BY seq, path")
        return [(int(seq), str(path)) for seq, path in rows]

    # -- checkpoints ---------------------------------------------------------------------

    def _root_from_stored_leaves(self, size: int) -> bytes:
        """Recompute the root of the first ``size`` entries from their stored leaf hashes.

        Runs in the caller's thread on its own connection, one leaf at a time
        through a compact range: O(log n) memory, and the node's appends are
        not held up while a large ledger is read. Committed entries never change (one
        writer, under its lock), so the leaves read here are those signed.

        Raises:
            StorageError: fewer than ``size`` leaves are stored, or the file
                cannot be read.
        """
        rng = CompactRange()
        conn = _connect(self.path)
        try:
            # The cursor streams rows: one leaf in memory at a time.
            for seq, leaf in conn.execute(
                "SELECT seq, leaf FROM entries WHERE seq < ? ORDER BY seq", (size,)
            ):
                if seq != rng.size:
                    break
                rng.append(_blob(leaf, f"ledger store {self.path}: entry seq {seq}: leaf"))
        except sqlite3.Error as e:
            raise _storage_error(f"ledger store {self.path}", e) from e
        finally:
            conn.close()
        if rng.size != size:
            raise StorageError(f"ledger holds {rng.size} consecutive leaves, expected {size}")
        return rng.root()

    def sign_checkpoint(self, origin: str, key: Ed25519PrivateKey) -> StoredCheckpoint:
        """Sign a checkpoint over every entry committed when called, and record it.

        The root is recomputed from the stored leaves (not the node cache) and
        compared with the cache; the compare-and-swap record refuses a second
        root for a size already signed and any size above the stored entries.
        The leaves are read before the writer is asked to sign, so appends go
        on meanwhile; if another call has signed a larger size by then, that
        checkpoint (which covers every entry this call saw) is returned.

        Raises:
            StorageError: the recomputed root disagrees with the cache, or the
                record already holds another root for this size, or a size
                above the stored entries.
        """
        size = self._size
        root = self._root_from_stored_leaves(size)

        def run(conn: sqlite3.Connection) -> StoredCheckpoint:
            cached = self._range.root() if size == self._size else self.root(size)
            if root != cached:
                raise StorageError(
                    f"root of size {size} recomputed from the leaves differs from the tree cache; "
                    "run fsck"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute("SELECT size, root FROM signed WHERE id=1").fetchone()
                if last is not None:
                    last_size, last_root = last[0], bytes(last[1])
                    if last_size > self._size:
                        raise StorageError(
                            f"refusing to sign size {size}: size {last_size} is already signed"
                        )
                    if last_size >= size:
                        if last_root != (root if last_size == size else self.root(last_size)):
                            raise StorageError(
                                f"refusing to sign a second root for size {last_size}"
                            )
                        row = conn.execute(
                            "SELECT note FROM checkpoints WHERE size=?", (last_size,)
                        ).fetchone()
                        if row is None:
                            raise LedgerDamageError(
                                f"checkpoint size {last_size} was signed (signing record) "
                                "but is not stored; run fsck"
                            )
                        conn.execute("COMMIT")
                        return StoredCheckpoint(
                            last_size,
                            last_root,
                            _blob(row[0], f"checkpoint size {last_size}: note"),
                        )
                    cur = conn.execute(
                        "UPDATE signed SET size=?, root=? WHERE id=1 AND size=? AND root=?",
                        (size, root, last_size, last_root),
                    )
                else:
                    cur = conn.execute(
                        "INSERT INTO signed(id, size, root) VALUES (1, ?, ?)", (size, root)
                    )
                if cur.rowcount != 1:
                    raise StorageError("checkpoint record changed underneath the signer")
                note = sign_checkpoint(origin, size, root, key)
                conn.execute(
                    "INSERT INTO checkpoints(size, root, note, created) VALUES (?, ?, ?, ?)",
                    (size, root, note, int(time.time())),
                )
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may have rolled back already; a second
                # ROLLBACK would then hide the cause (a full disk) behind
                # "no transaction is active".
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return StoredCheckpoint(size, root, note)

        return self._submit(run)

    def add_cosignatures(self, size: int, lines: Iterable[SignatureLine]) -> StoredCheckpoint:
        """Append cosignature lines to the stored checkpoint of ``size``.

        Raises:
            StorageError: no checkpoint of that size was signed.
        """
        new_lines = list(lines)

        def run(conn: sqlite3.Connection) -> StoredCheckpoint:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT root, note FROM checkpoints WHERE size=?", (size,)
                ).fetchone()
                if row is None:
                    raise StorageError(f"no checkpoint of size {size} was signed")
                try:
                    note = add_signatures(bytes(row[1]), new_lines)
                except CheckpointError as e:
                    raise StorageError(f"stored checkpoint of size {size} is corrupt: {e}") from e
                conn.execute("UPDATE checkpoints SET note=? WHERE size=?", (note, size))
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may have rolled back already; a second
                # ROLLBACK would then hide the cause (a full disk) behind
                # "no transaction is active".
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return StoredCheckpoint(size, bytes(row[0]), note)

        return self._submit(run)

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Return every stored checkpoint, smallest size first."""
        rows = self._query("SELECT size, root, note FROM checkpoints ORDER BY size")
        return [self._checkpoint_row(r) for r in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """Return the checkpoint of the largest size, or None."""
        rows = self._query("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return self._checkpoint_row(rows[0]) if rows else None

    def _checkpoint_row(self, row: Any) -> StoredCheckpoint:
        where = f"ledger store {self.path}: checkpoint size {row[0]}"
        return StoredCheckpoint(
            row[0], _blob(row[1], f"{where}: root"), _blob(row[2], f"{where}: note")
        )

    # -- fsck ----------------------------------------------------------------------------

    def fsck(
        self,
        public_key: Ed25519PublicKey | None = None,
        origin: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        witnesses: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> FsckReport:
        """Rebuild the tree from the stored entries and check everything against it.

        Checks every body parses and re-hashes to its leaf, seq is dense, the
        ``prev`` chain, every cached node, every checkpoint's root (and its
        signature when ``public_key`` and ``origin`` are given), every
        cosignature by a known witness (when ``witnesses`` maps their key
        names to keys), the compare-and-swap signing record against the
        entries and checkpoints, and that each stored sensitive value matches
        its commitment.

        Raises:
            LedgerDamageError: the first inconsistency found, naming the entry,
                node, checkpoint or record.
            StorageError: the file could not be read.
        """
        # One read transaction: a running node appends while fsck reads, and the
        # entries, tree cache, checkpoints and signing record must be one state.
        try:
            conn = _connect(self.path)
        except StorageError as e:
            raise StorageError(f"fsck: {e}") from e
        try:
            conn.execute("BEGIN")
            return self._fsck_snapshot(conn, public_key, origin, progress, witnesses)
        except sqlite3.Error as e:
            raise _storage_error(f"ledger store {self.path}", e) from e
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()

    def _fsck_snapshot(
        self,
        conn: sqlite3.Connection,
        public_key: Ed25519PublicKey | None,
        origin: str | None,
        progress: Callable[[int, int], None] | None,
        witnesses: Mapping[str, Ed25519PublicKey] | None,
    ) -> FsckReport:
        """:meth:`fsck` inside the read transaction ``conn`` holds open."""
        self._check_tables(conn)
        row = conn.execute("SELECT MAX(seq), COUNT(*) FROM entries").fetchone()
        size = 0 if row[0] is None else row[0] + 1
        if size != row[1]:
            raise LedgerDamageError(f"ledger has gaps: {row[1]} entries up to seq {size - 1}")
        stored = {
            r[0]: StoredCheckpoint(
                r[0],
                _blob(r[1], f"checkpoint size {r[0]}: root"),
                _blob(r[2], f"checkpoint size {r[0]}: note"),
            )
            for r in conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size")
        }
        signed_rows = conn.execute("SELECT size, root FROM signed WHERE id=1").fetchall()
        signed = (
            (signed_rows[0][0], _blob(signed_rows[0][1], "signing record: root"))
            if signed_rows
            else None
        )
        wanted = set(stored) | ({signed[0]} if signed else set())
        roots: dict[int, bytes] = {}
        if 0 in wanted:
            roots[0] = EMPTY_ROOT
        computed: dict[int, list[bytes]] = {}

        def on_node(level: int, idx: int, digest: bytes) -> None:
            computed.setdefault(level, []).append(digest)

        rng = CompactRange()
        prev = GENESIS_PREV
        for seq, raw_body, raw_leaf in _entry_pages(conn, size):
            if seq != rng.size:
                raise LedgerDamageError(f"entry seq {rng.size} is missing (found seq {seq})")
            body = _blob(raw_body, f"entry seq {seq}: body")
            leaf = _blob(raw_leaf, f"entry seq {seq}: leaf")
            try:
                entry = parse_entry(body)
            except EntryError as e:
                raise LedgerDamageError(f"entry seq {seq} is corrupt: {e}") from e
            if entry.seq != seq:
                raise LedgerDamageError(f"entry stored at seq {seq} says seq {entry.seq}")
            if entry.leaf != leaf:
                raise LedgerDamageError(
                    f"entry seq {seq}: stored leaf hash does not match its bytes"
                )
            if entry.prev != prev:
                raise LedgerDamageError(
                    f"entry seq {seq}: prev does not match the leaf of seq {seq - 1}"
                )
            if entry.fields["node"] != self.node:
                raise LedgerDamageError(f"entry seq {seq} was recorded by {entry.fields['node']!r}")
            prev = leaf.hex()
            rng.append(leaf, on_node)
            if rng.size in wanted:
                roots[rng.size] = rng.root()
            if progress is not None and rng.size % 65536 == 0:
                progress(rng.size, size)
        if rng.size != size:
            raise LedgerDamageError(f"ledger should hold {size} entries, found {rng.size}")
        node_count = 0
        for level, idx, digest in conn.execute(
            "SELECT level, idx, hash FROM nodes ORDER BY level, idx"
        ):
            level_nodes = computed.get(level, [])
            where = f"cached tree node level {level} index {idx}"
            if (
                type(idx) is not int
                or not 0 <= idx < len(level_nodes)
                or level_nodes[idx] != _blob(digest, where)
            ):
                raise LedgerDamageError(f"{where} is wrong")
            node_count += 1
        expected_nodes = sum(len(v) for v in computed.values())
        if node_count != expected_nodes:
            raise LedgerDamageError(
                f"tree cache holds {node_count} nodes, expected {expected_nodes}"
            )
        for cp in stored.values():
            self._fsck_checkpoint(cp, size, roots, public_key, origin, witnesses)
        self._fsck_signed(signed, size, stored, roots)
        secrets = conn.execute("SELECT seq, path, salt, value FROM secrets").fetchall()
        for seq, path, salt, value in secrets:
            where = f"entry seq {seq}: stored value for {path!r}"
            body = conn.execute("SELECT body FROM entries WHERE seq=?", (seq,)).fetchone()
            if body is None or not isinstance(path, str):
                raise LedgerDamageError(f"{where} belongs to no entry")
            try:
                fields = loads(_blob(body[0], f"entry seq {seq}: body"))
                committed = (
                    fields["detail"].get(path[7:])
                    if path.startswith("detail.")
                    else fields.get(path)
                )
                expected = commitment(_blob(salt, where), loads(_blob(value, where)))
            except LedgerError as e:
                raise LedgerDamageError(f"{where} is unreadable: {e}") from e
            if path not in fields["sensitive"] or committed != expected:
                raise LedgerDamageError(f"{where} does not match its commitment")
        if progress is not None:
            progress(size, size)
        return FsckReport(
            size=size,
            root=rng.root(),
            checkpoints=len(stored),
            nodes=node_count,
            secrets=len(secrets),
        )

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """Raise LedgerDamageError if a table of the schema is missing."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted(_TABLES - tables)
        if missing:
            raise LedgerDamageError(f"ledger store {self.path} lacks table(s) {', '.join(missing)}")

    @staticmethod
    def _fsck_checkpoint(
        cp: StoredCheckpoint,
        size: int,
        roots: Mapping[int, bytes],
        public_key: Ed25519PublicKey | None,
        origin: str | None,
        witnesses: Mapping[str, Ed25519PublicKey] | None,
    ) -> None:
        if cp.size > size:
            raise LedgerDamageError(
                f"checkpoint size {cp.size} exceeds the {size} stored entries: "
                "entries were lost after it was signed"
            )
        if roots.get(cp.size) != cp.root:
            raise LedgerDamageError(f"checkpoint size {cp.size}: root does not match the entries")
        try:
            note = parse_note(cp.note)
            parsed = parse_checkpoint(note.text)
            if public_key is not None and origin is not None:
                parsed = verify_checkpoint(cp.note, origin, public_key)
            if witnesses is not None:
                # Export and proofs read the cosignatures: a corrupt one must
                # show here, not first when an auditor asks for a bundle.
                cosignatures(note, witnesses)
        except CheckpointError as e:
            raise LedgerDamageError(f"checkpoint size {cp.size}: {e}") from e
        if parsed.size != cp.size or parsed.root != cp.root:
            raise LedgerDamageError(f"checkpoint size {cp.size}: note disagrees with its record")

    @staticmethod
    def _fsck_signed(
        signed: tuple[int, bytes] | None,
        size: int,
        stored: Mapping[int, StoredCheckpoint],
        roots: Mapping[int, bytes],
    ) -> None:
        # The signing record is what stops this node from signing a second
        # root for a size it already published. If it runs ahead of the
        # entries or checkpoints, history was cut back: the node will refuse
        # to sign, and witnesses holding the old checkpoint will see a fork.
        if signed is None:
            if stored:
                raise LedgerDamageError(
                    f"{len(stored)} checkpoint(s) are stored but the signing record is missing"
                )
            return
        signed_size, signed_root = signed
        if signed_size > size:
            raise LedgerDamageError(
                f"the signing record says size {signed_size} was signed, but only {size} "
                "entries are stored: entries were lost or rolled back after signing"
            )
        if roots.get(signed_size) != signed_root:
            raise LedgerDamageError(
                f"the signing record's root for size {signed_size} does not match the entries"
            )
        if signed_size not in stored:
            raise LedgerDamageError(
                f"checkpoint size {signed_size} was signed (signing record) but is not stored"
            )
        largest = max(stored)
        if largest > signed_size:
            raise LedgerDamageError(
                f"checkpoint size {largest} is stored but the signing record stops at "
                f"size {signed_size}"
            )

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the writer after it commits what is queued, and close the file."""
        with self._put_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._writer.join()
        with self._read_lock:
            if not self._read_closed:
                self._read.close()
                self._read_closed = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the writer lock
            self._lock_fd = None

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
