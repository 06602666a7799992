"""fsck finds damage that leaves the tree cache consistent, and opening a damaged file says so.

Each case damages a real SQLite ledger the way a bad restore, a disk fault or
a tamperer would, then expects :class:`LedgerDamageError` naming the damage.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.checkpoint import Note, SignatureLine, parse_note
from ledger.directory import parse_directory
from ledger.errors import LedgerDamageError, StorageError
from ledger.store import LedgerStore
from node.cli import exit_codes
from tests.unit.ledger.helpers import Federation, fill


def _ledger_with_checkpoints(fed: Federation) -> Path:
    """alpha's ledger with cosigned checkpoints of sizes 30 and 40 and 45 entries; closed."""
    store = fed.store("alpha")
    fill(store, 30)
    fed.publish("alpha")
    fill(store, 10, start=30)
    fed.publish("alpha")
    fill(store, 5, start=40)
    path = store.path
    store.close()
    del fed.stores["alpha"]
    return path


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _witnesses(fed: Federation) -> dict[str, object]:
    return dict(parse_directory(fed.directory_json, fed.ca_pem).witness_keys(exclude="alpha"))


def _fsck(fed: Federation, path: Path, **kwargs: object) -> None:
    with LedgerStore(path, "alpha") as store:
        store.fsck(fed.keys["alpha"].public_key(), fed.origin("alpha"), **kwargs)  # type: ignore[arg-type]


def test_intact_ledger_passes(federation: Federation) -> None:
    path = _ledger_with_checkpoints(federation)
    _fsck(federation, path, witnesses=_witnesses(federation))


def test_rolled_back_entries_and_checkpoint_are_reported(federation: Federation) -> None:
    # Entries from 30 on, the tree nodes they finished, and checkpoint 40 are
    # gone: what is left is a consistent 30-entry ledger, but the signing
    # record still says size 40 was signed, so the node can never sign again
    # and witnesses holding 40 would see a fork.
    path = _ledger_with_checkpoints(federation)
    _sql(
        path,
        "DELETE FROM entries WHERE seq >= 30",
        "DELETE FROM nodes WHERE (idx + 1) * (1 << level) > 30",
        "DELETE FROM checkpoints WHERE size = 40",
    )
    with pytest.raises(LedgerDamageError, match=r"signing record says size 40 was signed.*only 30"):
        _fsck(federation, path)


def test_lost_latest_checkpoint_is_reported(federation: Federation) -> None:
    path = _ledger_with_checkpoints(federation)
    _sql(path, "DELETE FROM checkpoints WHERE size = 40")
    with pytest.raises(LedgerDamageError, match=r"checkpoint size 40 was signed .* not stored"):
        _fsck(federation, path)


def _corrupt_cosignature(path: Path, size: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        note = parse_note(
            bytes(conn.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()[0])
        )
        # Keep the name and key ID (so the line still claims a known witness)
        # and flip one bit of the signature.
        last = note.signatures[-1]
        bad = bytearray(last.signature)
        bad[-1] ^= 1
        lines = (*note.signatures[:-1], SignatureLine(last.name, last.key_id, bytes(bad)))
        conn.execute(
            "UPDATE checkpoints SET note=? WHERE size=?",
            (Note(text=note.text, signatures=lines).encode(), size),
        )
    finally:
        conn.close()


def test_corrupt_cosignature_is_reported(federation: Federation) -> None:
    path = _ledger_with_checkpoints(federation)
    _corrupt_cosignature(path, 40)
    with pytest.raises(LedgerDamageError, match=r"checkpoint size 40: cosignature by .* does not"):
        _fsck(federation, path, witnesses=_witnesses(federation))


def _delete_middle(path: Path) -> None:
    _sql(path, "DELETE FROM entries WHERE seq = 17")


def _corrupt_last(path: Path) -> None:
    _sql(path, "UPDATE entries SET body = CAST('{\"v\":1' AS BLOB) WHERE seq = 44")


def _garbage(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database, just bytes " * 200)


def _truncate(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete_middle, r"has gaps: 44 entries up to seq 44"),
        (_corrupt_last, r"last entry \(seq 44\) is corrupt"),
        (_garbage, r"not a database"),
        (_truncate, r"malformed|not a database"),
    ],
    ids=["gap", "corrupt-last-entry", "garbage-file", "truncated-file"],
)
def test_damage_found_on_open_is_integrity_damage(
    federation: Federation, damage: Callable[[Path], None], message: str
) -> None:
    path = _ledger_with_checkpoints(federation)
    _sql(path, "PRAGMA wal_checkpoint(TRUNCATE)")
    damage(path)
    with pytest.raises(LedgerDamageError, match=message) as info:
        _fsck(federation, path)
    # The CLI maps it to integrity (7), not configuration (3).
    assert exit_codes.code_for(info.value) == exit_codes.INTEGRITY


def test_foreign_schema_stays_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    _sql(path, "CREATE TABLE unrelated (x)")
    with pytest.raises(StorageError, match="not a fednode ledger") as info:
        LedgerStore(path, "alpha")
    assert not isinstance(info.value, LedgerDamageError)
    assert exit_codes.code_for(info.value) == exit_codes.CONFIG


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE entries SET body=CAST(body AS TEXT) WHERE seq=3", r"entry seq 3: body is stored"),
        ("UPDATE entries SET leaf='x' WHERE seq=3", r"entry seq 3: leaf is stored as str"),
        ("UPDATE entries SET leaf=32 WHERE seq=3", r"entry seq 3: leaf is stored as int"),
        ("UPDATE nodes SET hash='abc' WHERE level=1 AND idx=0", r"level 1 index 0 is stored"),
        ("UPDATE checkpoints SET note=CAST(note AS TEXT)", r"checkpoint size 30: note is stored"),
        ("UPDATE checkpoints SET root=7 WHERE size=40", r"size 40: root is stored as int"),
        ("UPDATE signed SET root='r'", r"signing record: root is stored as str"),
        ("UPDATE entries SET body=CAST(body AS TEXT) WHERE seq=44", r"seq 44: body is stored"),
        ("DROP TABLE nodes", r"lacks table\(s\) nodes"),
        ("DROP TABLE secrets", r"lacks table\(s\) secrets"),
        ("DROP TABLE signed", r"lacks table\(s\) signed"),
    ],
)
def test_values_of_the_wrong_type_and_missing_tables_are_damage(
    federation: Federation, statement: str, message: str
) -> None:
    path = _ledger_with_checkpoints(federation)
    _sql(path, statement)
    with pytest.raises(LedgerDamageError, match=message) as info:
        _fsck(federation, path, witnesses=_witnesses(federation))
    assert exit_codes.code_for(info.value) == exit_codes.INTEGRITY


def test_fsck_checks_one_state_while_the_node_appends(federation: Federation) -> None:
    # fsck reads entries, tree nodes, checkpoints and the signing record in one read
    # transaction, so entries appended meanwhile (and their tree nodes) are not damage.
    store = federation.store("alpha")
    fill(store, 1500)
    federation.publish("alpha")
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            store.append({"event": "rpc.call", "detail": {"i": 1}})

    writer = threading.Thread(target=append)
    writer.start()
    try:
        sizes = [store.fsck().size for _ in range(4)]
    finally:
        stop.set()
        writer.join()
    assert sizes[-1] > 1500
    assert store.fsck().size == store.size
