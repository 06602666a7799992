"""The catalog registry: the datasets a node has, in one SQLite file under its data dir.

Registering a dataset records its path, format, Arrow schema, row count and a
sensitivity label per column (``public``, ``internal`` or ``personal``). The
data itself stays where it is. Invariant: a dataset is opened only if its
current schema still equals the registered one, so labels and agreements
never silently apply to columns that changed underneath them.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from ledger.canonical import dumps, loads
from node.errors import CatalogError
from node.sqlite_db import open_versioned_db

__all__ = [
    "FORMATS",
    "LABELS",
    "Catalog",
    "ColumnInfo",
    "DatasetInfo",
    "detect_format",
    "infer_label",
    "is_dataset_name",
    "open_dataset",
]

LABELS = ("public", "internal", "personal")
FORMATS = ("parquet", "csv", "arrow")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Column names that usually hold data about a person. Matching is deliberately
# broad: a wrong "personal" costs an operator one --label flag, a wrong
# "internal" could let personal data through a careless agreement review.
_PERSONAL_HINTS = re.compile(
    r"(^|_)(id|ids|name|names|first|last|surname|given|birth|dob|born|age|sex|gender|"
    r"address|street|postcode|postal|zip|phone|mobile|email|mail|ssn|nin|passport|"
    r"licen[cs]e|patient|person|citizen|resident|taxpayer|iban|account|ip|lat|lon|"
    r"latitude|longitude|location|diagnosis|ethnic|religion|health)($|_)",
    re.IGNORECASE,
)
_SCHEMA_VERSION = 1
_INSERT_VALUES = " INTO datasets VALUES (?,?,?,?,?,?,?,?)"
_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, format TEXT NOT NULL,
    schema BLOB NOT NULL, rows INTEGER NOT NULL, labels TEXT NOT NULL,
    description TEXT NOT NULL, added INTEGER NOT NULL);
"""


def is_dataset_name(value: object) -> bool:
    """Whether ``value`` is a valid dataset name (1-64 of ``a-z 0-9 _ . -``, starting
    with a letter or digit). Checked at registration and wherever a name arrives from a peer.
    """
    return isinstance(value, str) and bool(_NAME.match(value))


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    label: str


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset."""

    name: str
    path: Path
    format: str
    schema: pa.Schema
    rows: int
    labels: dict[str, str]
    description: str
    added: int

    @property
    def columns(self) -> list[ColumnInfo]:
        return [ColumnInfo(f.name, str(f.type), self.labels[f.name]) for f in self.schema]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "rows": self.rows,
            "description": self.description,
            "added": self.added,
            "columns": [{"name": c.name, "type": c.type, "label": c.label} for c in self.columns],
        }


def infer_label(column: str) -> str:
    """A conservative default label: ``personal`` for person-like names, else ``internal``.

    Nothing is ever inferred ``public``; only an operator can say that.
    """
    return "personal" if _PERSONAL_HINTS.search(column) else "internal"


def detect_format(path: Path, explicit: str | None = None) -> str:
    """The dataset format: ``explicit``, or from the extension; a directory is Parquet.

    Raises:
        CatalogError: the format is unknown or cannot be inferred.
    """
    if explicit:
        if explicit not in FORMATS:
            raise CatalogError(f"unknown dataset format {explicit!r}", hint=f"use one of {FORMATS}")
        return explicit
    if path.is_dir():
        return "parquet"
    suffix = path.suffix.lower()
    for fmt, suffixes in (
        ("parquet", (".parquet", ".pq")),
        ("csv", (".csv",)),
        ("arrow", (".arrow", ".ipc", ".feather")),
    ):
        if suffix in suffixes:
            return fmt
    raise CatalogError(
        f"cannot tell the format of {path.name!r}",
        hint="use a .parquet, .csv or .arrow file (or a Parquet directory), or pass --format",
    )


def open_dataset(path: Path, fmt: str) -> ds.Dataset:
    """Open ``path`` as a pyarrow dataset (lazy; nothing is read yet).

    Raises:
        CatalogError: the path is missing or unreadable in that format.
    """
    if not path.exists():
        raise CatalogError(f"dataset path {path} does not exist")
    try:
        return ds.dataset(str(path), format="ipc" if fmt == "arrow" else fmt)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CatalogError(f"cannot open {path} as {fmt}: {e}") from e


def _decode_dictionaries(schema: pa.Schema) -> pa.Schema:
    # Chunks carry plain record-batch messages, so dictionary columns travel decoded.
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )


class Catalog:
    """The registry of datasets, backed by ``catalog.db``."""

    def __init__(self, path: Path) -> None:
        """Open or create the registry.

        Raises:
            CatalogError: the file is unreadable or of an unknown schema version.
        """
        self._lock = threading.Lock()
        self._db = open_versioned_db(path, _SQL, _SCHEMA_VERSION, CatalogError, "catalog")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        name: str,
        path: Path,
        *,
        fmt: str | None = None,
        labels: dict[str, str] | None = None,
        description: str = "",
        replace: bool = False,
    ) -> DatasetInfo:
        """Register a dataset, reading its schema and row count.

        ``replace`` re-registers an existing name (its data changed shape); the
        agreements naming it then apply to the new schema, column by column.

        Raises:
            CatalogError: bad name, duplicate name (without ``replace``),
                unreadable data, a label for a column that does not exist, or an
                unknown label.
        """
        if not is_dataset_name(name):
            raise CatalogError(
                f"dataset name {name!r} is not valid",
                hint="use 1-64 lowercase letters, digits, '_', '.', '-'",
            )
        path = path.resolve()
        fmt = detect_format(path, fmt)
        dataset = open_dataset(path, fmt)
        schema = _decode_dictionaries(dataset.schema)
        try:
            rows = dataset.count_rows()
        except (pa.ArrowException, OSError) as e:
            raise CatalogError(f"cannot count rows of {path}: {e}") from e
        given = dict(labels or {})
        unknown = sorted(set(given) - set(schema.names))
        if unknown:
            raise CatalogError(
                f"labels name columns not in {name}: {', '.join(unknown)}",
                hint=f"columns are: {', '.join(schema.names)}",
            )
        for column, label in given.items():
            if label not in LABELS:
                raise CatalogError(
                    f"label {label!r} for column {column!r} is not one of {', '.join(LABELS)}"
                )
        final = {f.name: given.get(f.name, infer_label(f.name)) for f in schema}
        info = DatasetInfo(name, path, fmt, schema, rows, final, description, int(time.time()))
        with self._lock:
            try:
                self._db.execute(
                    ("INSERT OR REPLACE" if replace else "INSERT") + _INSERT_VALUES,
                    (
                        name,
                        str(path),
                        fmt,
                        schema.serialize().to_pybytes(),
                        rows,
                        dumps(final).decode(),
                        description,
                        info.added,
                    ),
                )
            except sqlite3.IntegrityError as e:
                raise CatalogError(
                    f"dataset {name!r} is already registered",
                    hint="choose another name, or pass --replace if its data changed shape",
                ) from e
        return info

    def get(self, name: str) -> DatasetInfo:
        """The registered dataset ``name``.

        Raises:
            CatalogError: no dataset has that name.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT name, path, format, schema, rows, labels, description, added "
                "FROM datasets WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise CatalogError(
                f"no dataset named {name!r} in the catalog", hint="see 'fednode dataset list'"
            )
        return self._info(row)

    def list(self) -> list[DatasetInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, path, format, schema, rows, labels, description, added "
                "FROM datasets ORDER BY name"
            ).fetchall()
        return [self._info(r) for r in rows]

    @staticmethod
    def _info(row: tuple[object, ...]) -> DatasetInfo:
        name, path, fmt, schema, rows, labels, description, added = row
        assert isinstance(schema, bytes) and isinstance(labels, str)
        return DatasetInfo(
            name=str(name),
            path=Path(str(path)),
            format=str(fmt),
            schema=pa.ipc.read_schema(pa.py_buffer(schema)),
            rows=int(str(rows)),
            labels=dict(loads(labels.encode())),
            description=str(description),
            added=int(str(added)),
        )

    def open(self, name: str) -> tuple[DatasetInfo, ds.Dataset]:
        """Open a registered dataset, refusing one whose schema changed since it was added.

        Raises:
            CatalogError: unknown name, unreadable data, or a changed schema.
        """
        info = self.get(name)
        dataset = open_dataset(info.path, info.format)
        current = _decode_dictionaries(dataset.schema)
        if not current.equals(info.schema):
            raise CatalogError(
                f"dataset {name!r} at {info.path} changed its schema since it was registered",
                hint="review the change and its labels, then 'fednode dataset add NAME PATH "
                "--replace'",
            )
        return info, dataset
