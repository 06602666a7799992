"""Opening the node's small SQLite databases (catalog, agreements, exchange).

Each database is a single file under the node's data folder, in WAL mode with
``synchronous=FULL`` so an acknowledged write survives power loss, and each
carries a schema version in its ``meta`` table. A file written by a newer
fednode is refused rather than misread; an older one is upgraded in place,
in one transaction, by the migrations its store declares.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from node.errors import NodeError

__all__ = ["Migration", "open_versioned_db"]


#: Upgrades a database from one schema version to the next, inside the caller's transaction.
Migration = Callable[[sqlite3.Connection], None]


def open_versioned_db(
    path: Path,
    schema_sql: str,
    version: int,
    error: type[NodeError],
    what: str,
    migrations: Mapping[int, Migration] | None = None,
) -> sqlite3.Connection:
    """Open or create ``path`` with ``schema_sql`` and check its schema version.

    ``schema_sql`` must create a ``meta(key, value)`` table (``IF NOT EXISTS``)
    and the tables of ``version``. A file of an older version is upgraded in
    one transaction by ``migrations[v]`` for each ``v`` from its version up
    (each raises the schema by one); the version is raised with it, so an
    older fednode refuses the upgraded file instead of misreading it.

    Raises:
        NodeError: of class ``error``, naming ``what``, when the file cannot be
            opened or holds a version this node cannot read or upgrade.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema_sql)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(version),))
        elif row[0] != str(version):
            found = int(row[0]) if str(row[0]).isdigit() else None
            steps = range(found, version) if found is not None else range(0)
            if found is None or found > version or any(v not in (migrations or {}) for v in steps):
                db.close()
                raise error(
                    f"{what} {path} has schema version {row[0]}, this node reads {version}",
                    hint="upgrade fednode, or restore the file from a backup of this version",
                )
            db.execute("BEGIN IMMEDIATE")
            try:
                for v in steps:
                    (migrations or {})[v](db)
                db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(version),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                db.close()
                raise
    except sqlite3.Error as e:
        raise error(f"cannot open {what} {path}: {e}") from e
    return db
