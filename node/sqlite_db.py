"""Opening the node's small SQLite databases (catalog, agreements, exchange).

Each database is a single file under the node's data folder, in WAL mode with
``synchronous=FULL`` so an acknowledged write survives power loss, and each
carries a schema version in its ``meta`` table. A file written by a newer
fednode is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.errors import NodeError

__all__ = ["open_versioned_db"]


def open_versioned_db(
    path: Path, schema_sql: str, version: int, error: type[NodeError], what: str
) -> sqlite3.Connection:
    """Open or create ``path`` with ``schema_sql`` and check its schema version.

    ``schema_sql`` must create a ``meta(key, value)`` table (``IF NOT EXISTS``).

    Raises:
        NodeError: of class ``error``, naming ``what``, when the file cannot be
            opened or holds another schema version.
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
            db.close()
            raise error(
                f"{what} {path} has schema version {row[0]}, this node reads {version}",
                hint="upgrade fednode, or restore the file from a backup of this version",
            )
    except sqlite3.Error as e:
        raise error(f"cannot open {what} {path}: {e}") from e
    return db
