"""Versioned SQLite files: refused when newer, upgraded in one transaction when older."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.errors import CatalogError
from node.sqlite_db import Migration, open_versioned_db

SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS things (id TEXT PRIMARY KEY, size INTEGER);
"""


def _v1_file(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE things (id TEXT PRIMARY KEY);"
        "INSERT INTO things VALUES ('a');"
    )
    db.close()


def _add_size(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE things ADD COLUMN size INTEGER")


def _version(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
    finally:
        db.close()


def test_an_older_file_is_upgraded_and_its_version_raised(tmp_path: Path) -> None:
    path = tmp_path / "things.db"
    _v1_file(path)
    db = open_versioned_db(path, SCHEMA_V2, 2, CatalogError, "thing store", {1: _add_size})
    assert db.execute("SELECT id, size FROM things").fetchall() == [("a", None)]
    db.close()
    assert _version(path) == "2"
    # Opening it again runs nothing more.
    open_versioned_db(path, SCHEMA_V2, 2, CatalogError, "thing store", {}).close()


def test_a_failing_upgrade_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "things.db"
    _v1_file(path)

    def half_done(db: sqlite3.Connection) -> None:
        _add_size(db)
        raise sqlite3.OperationalError("disk I/O error")

    broken: dict[int, Migration] = {1: half_done}
    with pytest.raises(CatalogError, match="disk I/O error"):
        open_versioned_db(path, SCHEMA_V2, 2, CatalogError, "thing store", broken)
    assert _version(path) == "1"
    db = sqlite3.connect(path)
    assert [row[1] for row in db.execute("PRAGMA table_info(things)")] == ["id"]
    db.close()


@pytest.mark.parametrize(
    ("migrations", "version"),
    [({}, 2), ({1: _add_size}, 3)],
    ids=["no-upgrade-path", "newer-file"],
)
def test_a_version_it_cannot_read_or_upgrade_is_refused(
    tmp_path: Path, migrations: dict[int, Migration], version: int
) -> None:
    path = tmp_path / "things.db"
    _v1_file(path)
    if version == 3:
        # A file written by a newer fednode: this one reads version 2.
        open_versioned_db(path, SCHEMA_V2, 2, CatalogError, "thing store", migrations).close()
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("UPDATE meta SET value='3' WHERE key='schema'")
        db.close()
    expected = "schema version 3, this node reads 2" if version == 3 else "version 1, this node"
    with pytest.raises(CatalogError, match=expected) as refused:
        open_versioned_db(path, SCHEMA_V2, 2, CatalogError, "thing store", {})
    assert refused.value.hint is not None and "upgrade fednode" in refused.value.hint
