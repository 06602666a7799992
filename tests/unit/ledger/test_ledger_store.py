"""The SQLite store: durability, group commit, schema version, checkpoints, erasure, fsck."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.canonical import loads
from ledger.entry import GENESIS_PREV, commitment, parse_entry
from ledger.errors import EntryError, StorageError
from ledger.merkle import CompactRange, root_from_leaves, verify_consistency, verify_inclusion
from ledger.store import LedgerStore
from tests.unit.ledger.helpers import fill

ORIGIN = "fednode/testfed/alpha"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    s = LedgerStore(tmp_path / "ledger.db", "alpha")
    yield s
    s.close()


def test_entries_chain_and_survive_reopen(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "l.db", "alpha") as s:
        fill(s, 5)
        root = s.root()
    with LedgerStore(tmp_path / "l.db", "alpha") as s:
        assert s.size == 5
        assert s.root() == root
        seq, _ = s.append({"event": "after.reopen"})
        assert seq == 5
        entries = [parse_entry(body) for _, body, _ in s.iter_entries()]
    assert entries[0].prev == GENESIS_PREV
    for a, b in itertools.pairwise(entries):
        assert b.prev == a.leaf.hex()


def test_concurrent_appends_get_dense_unique_seqs(store: LedgerStore) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            seq, _ = store.append({"event": "x.y"})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(400))
    assert store.fsck().size == 400


def test_roots_and_proofs_match_an_in_memory_tree(store: LedgerStore) -> None:
    fill(store, 45)
    leaves = [leaf for _, _, leaf in store.iter_entries()]
    for size in (1, 2, 3, 16, 17, 31, 45):
        root = store.root(size)
        assert root == root_from_leaves(leaves[:size])
        for i in range(0, size, 7):
            verify_inclusion(leaves[i], i, size, store.inclusion_proof(i, size), root)
        for old in {1, min(5, size), size}:
            verify_consistency(old, size, store.consistency_proof(old, size), store.root(old), root)


@pytest.mark.parametrize(
    ("fields", "sensitive", "message"),
    [
        ({"event": "Bad Event"}, (), "event must be a dotted lower-case name"),
        ({"event": "x.y", "colour": "red"}, (), r"unknown entry fields \['colour'\]"),
        ({"event": "x.y", "columns": "age"}, (), "columns must be a list of strings"),
        ({"event": "x.y", "detail": {"f": 1.5}}, (), "float"),
        ({"event": "x.y", "peer": 3}, (), "peer must be a string or null"),
        ({"event": "x.y"}, ("event",), "cannot be recorded as sensitive"),
    ],
)
def test_bad_appends_are_refused_and_nothing_is_stored(
    store: LedgerStore, fields: dict[str, object], sensitive: tuple[str, ...], message: str
) -> None:
    with pytest.raises(EntryError, match=message):
        store.append(fields, sensitive)
    assert store.size == 0
    store.append({"event": "x.y"})
    assert store.fsck().size == 1


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "l.db", "alpha").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version '99'"):
        LedgerStore(tmp_path / "l.db", "alpha")


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "l.db", "alpha").close()
    with pytest.raises(StorageError, match="belongs to 'alpha'"):
        LedgerStore(tmp_path / "l.db", "beta")
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StorageError, match="not a fednode ledger"):
        LedgerStore(tmp_path / "other.db", "alpha")


def test_checkpoint_compare_and_swap(store: LedgerStore, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    fill(store, 3)
    first = store.sign_checkpoint(ORIGIN, key)
    # Same size again: the same note, never a second signature.
    assert store.sign_checkpoint(ORIGIN, key) == first
    fill(store, 2, 3)
    assert store.sign_checkpoint(ORIGIN, key).size == 5
    # Forge the record as if a different root had been signed for size 5.
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE signed SET root=? WHERE id=1", (b"\x01" * 32,))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="second root for size 5"):
        store.sign_checkpoint(ORIGIN, key)
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE signed SET size=9 WHERE id=1")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="size 9 is already signed"):
        store.sign_checkpoint(ORIGIN, key)


def test_signing_recomputes_root_from_leaves(store: LedgerStore) -> None:
    fill(store, 8)
    store.close()  # the writer lock passes to the store opened below
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE nodes SET hash=? WHERE level=3", (b"\x02" * 32,))
    conn.commit()
    conn.close()
    # The in-memory frontier came from the cache at open time.
    with (
        LedgerStore(store.path, "alpha") as reopened,
        pytest.raises(StorageError, match="run fsck"),
    ):
        reopened.sign_checkpoint(ORIGIN, Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), 'operator', 'intruder')"
            " AS BLOB) WHERE seq=2",
            "entry seq 2: stored leaf hash does not match",
        ),
        (
            "UPDATE nodes SET hash = zeroblob(32) WHERE level=1 AND idx=0",
            "cached tree node level 1 index 0 is wrong",
        ),
        ("DELETE FROM nodes WHERE level=2", "tree cache holds"),
        ("UPDATE checkpoints SET root = zeroblob(32)", "checkpoint size 6: root does not match"),
        ("UPDATE secrets SET value = CAST('\"other\"' AS BLOB)", "does not match its commitment"),
    ],
)
def test_fsck_finds_corruption(tmp_path: Path, sql: str, message: str) -> None:
    key = Ed25519PrivateKey.generate()
    with LedgerStore(tmp_path / "l.db", "alpha") as s:
        fill(s, 5)
        s.append({"event": "x.y", "actor": "Jane Citizen"}, sensitive={"actor"})
        s.sign_checkpoint(ORIGIN, key)
        s.fsck(key.public_key(), ORIGIN)
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute(sql)
    conn.commit()
    conn.close()
    with LedgerStore(tmp_path / "l.db", "alpha") as s, pytest.raises(StorageError, match=message):
        s.fsck(key.public_key(), ORIGIN)


def test_sensitive_fields_are_committed_and_erasable(store: LedgerStore) -> None:
    key = Ed25519PrivateKey.generate()
    seq, _ = store.append(
        {"event": "access.read", "actor": "Jane Citizen", "detail": {"ssn": "123", "n": 1}},
        sensitive={"actor", "detail.ssn"},
    )
    fields = loads(store.entry(seq))
    assert fields["sensitive"] == ["actor", "detail.ssn"]
    assert "Jane" not in store.entry(seq).decode()
    assert fields["actor"].startswith("sha256:")
    assert store.reveal(seq, "actor") == "Jane Citizen"
    fill(store, 3)
    cp = store.sign_checkpoint(ORIGIN, key)
    leaf_before = [leaf for _, _, leaf in store.iter_entries()]
    store.erase(seq, "actor")
    with pytest.raises(StorageError, match="erased"):
        store.reveal(seq, "actor")
    with pytest.raises(StorageError, match="holds no stored value"):
        store.erase(seq, "actor")
    assert [leaf for _, _, leaf in store.iter_entries()] == leaf_before
    assert store.root(cp.size) == cp.root
    report = store.fsck(key.public_key(), ORIGIN)
    assert report.secrets == 1
    verify_inclusion(leaf_before[seq], seq, cp.size, store.inclusion_proof(seq, cp.size), cp.root)


def test_commitment_is_salted() -> None:
    assert commitment(b"a" * 16, "x") != commitment(b"b" * 16, "x")


def test_close_during_appends_never_leaves_a_caller_waiting(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l.db", "alpha")
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(200):
            try:
                store.append({"event": "x.y"})
            except StorageError as e:
                assert "closed" in str(e)
                outcomes.append("closed")
                return
        outcomes.append("done")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    store.close()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert len(outcomes) == 8
    with LedgerStore(tmp_path / "l.db", "alpha") as reopened:
        assert reopened.fsck().size == reopened.size


def test_a_writer_failure_fails_callers_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LedgerStore(tmp_path / "l.db", "alpha")
    store.append({"event": "x.y"})

    def broken(*args: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(CompactRange, "append", broken)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    with pytest.raises(StorageError, match="writer stopped"):
        store.append({"event": "x.y"})
    with pytest.raises(StorageError, match="closed"):
        store.append({"event": "x.y"})
    store.close()
    monkeypatch.undo()
    with LedgerStore(tmp_path / "l.db", "alpha") as reopened:
        assert reopened.fsck().size == 1


def test_erased_value_leaves_neither_the_database_nor_its_wal(tmp_path: Path) -> None:
    """Erasure is of the bytes on disk, not only the row: free pages and WAL frames included."""
    path = tmp_path / "ledger.sqlite"
    secret = "Reason naming Jane Q. Citizen, 1970-01-01"
    store = LedgerStore(path, "alpha")
    try:
        seq, _ = store.append(
            {"event": "agreement.revoked", "detail": {"reason": secret}},
            sensitive={"detail.reason"},
        )
        fill(store, 3)
        raw = [p.read_bytes() for p in (path, tmp_path / "ledger.sqlite-wal") if p.exists()]
        assert any(secret.encode() in data for data in raw), "the value is stored before erasure"
        store.erase(seq, "detail.reason")
        wal = tmp_path / "ledger.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert secret.encode() not in path.read_bytes()
        # The ledger keeps working after the WAL was truncated.
        fill(store, 2)
        assert store.size == seq + 6
    finally:
        store.close()
    assert secret.encode() not in path.read_bytes()


def test_erasure_blocked_by_a_reader_finishes_when_run_again(tmp_path: Path) -> None:
    """Another process reading an old snapshot keeps the WAL: the erasure says so without
    holding the writer for long, and running it again removes the last copy."""
    path = tmp_path / "ledger.sqlite"
    secret = "Reason naming Jane Q. Citizen"
    store = LedgerStore(path, "alpha")
    try:
        seq, _ = store.append(
            {"event": "agreement.revoked", "detail": {"reason": secret}},
            sensitive={"detail.reason"},
        )
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM entries").fetchone()  # holds a snapshot
        blocked = store.erase(seq, "detail.reason")
        assert blocked.deleted and not blocked.wal_truncated
        assert store.stored_values() == []
        # The node's appends still go through while the reader holds on.
        fill(store, 2)
        reader.rollback()
        reader.close()
        with pytest.raises(StorageError, match="holds no stored value"):
            store.erase(seq, "detail.reason")
        again = store.erase(seq, "detail.reason", missing_ok=True)
        assert not again.deleted and again.wal_truncated
        assert secret.encode() not in path.read_bytes()
        wal = tmp_path / "ledger.sqlite-wal"
        assert not wal.exists() or secret.encode() not in wal.read_bytes()
    finally:
        store.close()


def test_stored_values_lists_what_erasure_has_not_reached(store: LedgerStore) -> None:
    a, _ = store.append({"event": "x", "detail": {"r": "1"}}, sensitive={"detail.r"})
    b, _ = store.append({"event": "x", "actor": "p", "detail": {"r": "2"}}, sensitive={"actor"})
    assert store.stored_values() == [(a, "detail.r"), (b, "actor")]
    store.erase(a, "detail.r")
    assert store.stored_values() == [(b, "actor")]


_SECOND_WRITER = """
import sys
from pathlib import Path
from ledger.errors import StorageError
from ledger.store import LedgerStore
store = LedgerStore(Path(sys.argv[1]), "alpha")
print(store.size)
try:
    store.append({"event": "rpc.call"})
except StorageError as e:
    print(e)
store.close()
"""


def test_only_one_process_writes_a_ledger_and_readers_are_not_blocked(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = LedgerStore(path, "alpha")
    try:
        fill(first, 3)
        # Another process opens the file while this one holds the writer lock: it may
        # read (fsck, size), but its append fails with a message naming the file.
        result = subprocess.run(
            [sys.executable, "-c", _SECOND_WRITER, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[3],
        )
        size, message = result.stdout.splitlines()
        assert size == "3"
        assert message == (
            f"ledger store {path} is being written by another fednode process (it holds "
            f"{path}.lock); stop that process, or ask it to do this"
        )
        # A second store in this process is refused the same way, and never writes.
        second = LedgerStore(path, "alpha")
        with pytest.raises(StorageError, match="being written by another fednode process"):
            second.append({"event": "rpc.call"})
        assert second.fsck().size == 3
        second.close()
        first.append({"event": "rpc.call"})
    finally:
        first.close()
    # Once the writer closed, another may write, from the tip the first one left.
    with LedgerStore(path, "alpha") as third:
        assert third.append({"event": "rpc.call"})[0] == 4
        assert third.fsck().size == 5


def test_a_writer_opened_before_another_wrote_continues_from_the_new_tip(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    late = LedgerStore(path, "alpha")  # opened, but has not written: holds no lock
    with LedgerStore(path, "alpha") as early:
        fill(early, 2)
    assert late.append({"event": "rpc.call"})[0] == 2
    assert late.fsck().size == 3
    late.close()


@pytest.mark.parametrize(
    ("fields", "sensitive", "message"),
    [
        # A lone surrogate in a detail key fails the canonical key ordering
        # with UnicodeEncodeError: that used to stop the writer for good.
        ({"event": "x.y", "detail": {"\udc80": 1}}, (), "canonical"),
        ({"event": "x.y", "detail": {"ok": {"\ud800k": 1}}}, (), "canonical"),
        ({"event": "x.y", "detail": {"\udc80": 1}}, ("detail.\udc80",), "canonical"),
        ({"event": "x.y", "actor": "a"}, (5,), "must be strings"),
        ({"event": "x.y", "actor": "a"}, ("actor", 5), "must be strings"),
    ],
)
def test_a_bad_value_fails_only_its_own_append(
    store: LedgerStore, fields: dict[str, object], sensitive: tuple[object, ...], message: str
) -> None:
    store.append({"event": "x.y"})
    with pytest.raises(EntryError, match=message):
        store.append(fields, sensitive)  # type: ignore[arg-type]
    # The writer is still there: later appends are recorded, nothing was stored.
    seq, _ = store.append({"event": "x.y", "detail": {"after": True}})
    assert seq == 1
    assert store.fsck().size == 2


def test_creating_a_store_syncs_the_directories_it_creates(
    tmp_path: Path, synced: list[str]
) -> None:
    """A power loss must not take a new ledger directory (or the file's name) with it."""
    home = tmp_path / "home"
    with LedgerStore(home / "ledger" / "ledger.sqlite", "alpha") as store:
        store.append({"event": "x.y"})
    # Each new directory's entry lives in its parent; the new file's in its own directory.
    assert {str(tmp_path), str(home), str(home / "ledger")} <= set(synced)
    synced.clear()
    with LedgerStore(home / "ledger" / "ledger.sqlite", "alpha") as store:
        store.append({"event": "x.y"})
    assert synced == []  # opening an existing store creates nothing


def _fill_fast(store: LedgerStore, count: int) -> None:
    """``count`` appends from 32 threads, so group commit makes it quick."""

    def work(n: int) -> None:
        for i in range(n, count, 32):
            store.append({"event": "x.y", "detail": {"i": i}})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_signing_reads_the_leaves_in_constant_memory(store: LedgerStore) -> None:
    """Signing recomputes the root from every stored leaf, one at a time: a ledger of
    millions of entries must not need their leaves in memory at once."""
    import tracemalloc

    _fill_fast(store, 5000)
    tracemalloc.start()
    try:
        cp = store.sign_checkpoint(ORIGIN, Ed25519PrivateKey.generate())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cp.size == 5000
    assert cp.root == root_from_leaves([leaf for _, _, leaf in store.iter_entries()])
    # 5000 leaves held at once would be 300 KiB and more.
    assert peak < 100 * 1024, peak


def test_a_signer_overtaken_by_another_gets_the_larger_checkpoint(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends go on while a checkpoint's leaves are read; if another call signs a larger
    size meanwhile, this one returns that checkpoint, which covers all it saw."""
    key = Ed25519PrivateKey.generate()
    fill(store, 5)
    real = LedgerStore._root_from_stored_leaves
    overtaken: list[object] = []

    def reading(self: LedgerStore, size: int) -> bytes:
        root = real(self, size)
        if not overtaken:
            overtaken.append(None)
            fill(store, 3, 5)  # appends are not held up by the signer
            overtaken.append(store.sign_checkpoint(ORIGIN, key))
        return root

    monkeypatch.setattr(LedgerStore, "_root_from_stored_leaves", reading)
    cp = store.sign_checkpoint(ORIGIN, key)
    assert cp == overtaken[1]
    assert cp.size == 8
    assert [c.size for c in store.checkpoints()] == [8]
    assert store.fsck(key.public_key(), ORIGIN).checkpoints == 1


def _erased_record(seq: int) -> dict[str, object]:
    return {"event": "ledger.erased", "actor": "operator", "detail": {"seq": seq, "field": "actor"}}


def test_an_erasure_and_its_record_commit_together(store: LedgerStore) -> None:
    key = Ed25519PrivateKey.generate()
    for i in range(4):
        store.append({"event": "x.y", "actor": f"person {i}"}, ["actor"])
    signed = store.sign_checkpoint(ORIGIN, key)
    erasure = store.erase(2, "actor", record=_erased_record(2))
    assert (erasure.deleted, erasure.wal_truncated, erasure.recorded) == (True, True, 4)
    assert loads(store.entry(4))["event"] == "ledger.erased"
    assert loads(store.entry(4))["prev"] == parse_entry(store.entry(3)).leaf.hex()
    with pytest.raises(StorageError, match="erased"):
        store.reveal(2, "actor")
    assert store.append({"event": "x.y"})[0] == 5
    assert store.root(4) == signed.root
    assert store.fsck(key.public_key(), ORIGIN).size == 6
    # Run again (a run cut short): nothing left to delete, and it is recorded again.
    again = store.erase(2, "actor", missing_ok=True, record=_erased_record(2))
    assert (again.deleted, again.recorded) == (False, 6)


@pytest.mark.parametrize(
    ("seq", "record", "error", "message"),
    [
        (0, {"event": "Not An Event"}, EntryError, "dotted lower-case"),
        (0, {"event": "x.y", "detail": {"\udc80": 1}}, EntryError, "canonical"),
        (7, _erased_record(7), StorageError, "holds no stored value"),
    ],
)
def test_an_erasure_that_cannot_be_recorded_erases_nothing(
    store: LedgerStore, seq: int, record: dict[str, object], error: type[Exception], message: str
) -> None:
    store.append({"event": "x.y", "actor": "person"}, ["actor"])
    with pytest.raises(error, match=message):
        store.erase(seq, "actor", record=record)
    assert store.reveal(0, "actor") == "person"
    assert store.size == 1
    assert store.append({"event": "x.y"})[0] == 1
    assert store.fsck().size == 2
