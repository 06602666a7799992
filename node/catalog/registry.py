"""The catalog registry: the datasets a node has, in one SQLite file under its data dir.

Registering a dataset records its path, format, Arrow schema, row count and a
sensitivity label per column (``public``, ``internal`` or ``personal``). The
data itself stays where it is. Invariant: a dataset is opened only if its
current schema still equals the registered one, so labels and agreements
never silently apply to columns that changed underneath them.

A dataset is registered only after it was read in full as a share would read
it (see :mod:`node.catalog.verify`), so a registered dataset holds no value
its schema cannot carry. Registration also records each file's size and
modification time, so :meth:`Catalog.status` can tell cheaply when the data
went missing or changed afterwards. Re-registering (``replace``) keeps the
reviewed label of every column whose name and type stayed, and the
description, unless new ones are given.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ledger.canonical import dumps, loads
from node.catalog.verify import ReadProgress, read_all
from node.errors import CatalogError, RequestError
from node.sqlite_db import open_versioned_db

__all__ = [
    "FORMATS",
    "LABELS",
    "Catalog",
    "CatalogRequestError",
    "ColumnInfo",
    "DatasetInfo",
    "DatasetStatus",
    "SchemaChanges",
    "detect_format",
    "infer_label",
    "is_dataset_name",
    "open_dataset",
]

LABELS = ("public", "internal", "personal")


class CatalogRequestError(RequestError, CatalogError):
    """A registration names something unusable (a bad dataset name, format or label):
    a usage error (exit 2), still a :class:`CatalogError` to code that catches those."""


FORMATS = ("parquet", "csv", "arrow")
_SUFFIXES = (
    ("parquet", (".parquet", ".pq")),
    ("csv", (".csv",)),
    ("arrow", (".arrow", ".ipc", ".feather")),
)
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
# Fields pyarrow's dataset scanner adds to every scan (__filename is the file's
# path); a column of one of these names cannot be selected unambiguously.
_READER_FIELDS = frozenset(
    {"__filename", "__fragment_index", "__batch_index", "__last_in_fragment"}
)
_SCHEMA_VERSION = 1
_INSERT_VALUES = " INTO datasets VALUES (?,?,?,?,?,?,?,?)"
_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, format TEXT NOT NULL,
    schema BLOB NOT NULL, rows INTEGER NOT NULL, labels TEXT NOT NULL,
    description TEXT NOT NULL, added INTEGER NOT NULL);
-- Added within schema version 1: a catalog from before it simply has no
-- fingerprints, and its datasets' status is then judged by their schema alone.
CREATE TABLE IF NOT EXISTS fingerprints (name TEXT PRIMARY KEY, files TEXT NOT NULL);
"""
_REPLACE_HINT = (
    "review the change and its labels, then 'fednode dataset add {name} {path} --replace'"
)


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
            raise CatalogRequestError(
                f"unknown dataset format {explicit!r}", hint=f"use one of {FORMATS}"
            )
        return explicit
    if path.is_dir():
        # A folder takes the format its files share; Parquet when they share none,
        # as a partitioned Parquet dataset's files may have no extension at all.
        found = {_format_of(f) for f in _data_files(path)}
        only = found.pop() if len(found) == 1 else None
        return only or "parquet"
    fmt = _format_of(path)
    if fmt is not None:
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
        raise CatalogError(
            f"dataset path {path} does not exist",
            hint="the node opens the path itself: check that it exists where the node runs "
            "and that the account running 'fednode serve' can read it",
        )
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise CatalogError(
            f"this node may not read {path}",
            hint="give the account running 'fednode serve' read access to it",
        )
    try:
        dataset = ds.dataset(str(path), format="ipc" if fmt == "arrow" else fmt)
    except (pa.ArrowException, OSError, ValueError) as e:
        if not path.is_dir():
            _check_twins(path, _file_schema(path, fmt))
        raise CatalogError(
            f"cannot open {path} as {fmt}: {e}",
            hint="pass --format csv or --format arrow if it holds CSV or Arrow IPC files"
            if path.is_dir()
            else f"check that it is a complete {fmt} file (not empty, not still being "
            "written), or pass --format if it holds another format",
        ) from e
    kept = [name for name in _names(path, dataset.schema) if name in _READER_FIELDS]
    if kept:
        raise CatalogError(
            f"column {kept[0]!r} is a name the reader keeps for itself "
            f"({', '.join(sorted(_READER_FIELDS))}), so {path} cannot be read",
            hint="rename that column in the data, then add it again",
        )
    if path.is_dir():
        _check_folder(path, fmt, dataset)
    return dataset


def _names(path: Path | str, schema: pa.Schema) -> list[str]:
    """The schema's column names.

    Raises:
        CatalogError: a name is not UTF-8 (Arrow keeps a CSV header's bytes as they are).
    """
    try:
        return list(schema.names)
    except UnicodeDecodeError as e:
        raise CatalogError(
            f"{path} has a column name that is not UTF-8 text",
            hint="save the file (at least its header) as UTF-8, then add it again",
        ) from e


def _file_schema(path: Path, fmt: str) -> pa.Schema | None:
    """A file's own column names (and types, but for CSV), read without a dataset;
    ``None`` if unreadable."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path)
        if fmt == "arrow":
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).schema
        if fmt == "csv" and path.suffix.lower() == ".csv":
            # Only to explain Arrow's refusal: the header as Python's reader sees it.
            with path.open(newline="", encoding="utf-8", errors="replace") as file:
                header = next(csv.reader(file), [])
            return pa.schema([pa.field(name, pa.null()) for name in header])
    except (pa.ArrowException, OSError, ValueError, csv.Error):
        pass
    return None


def _check_twins(path: Path | str, schema: pa.Schema | None) -> None:
    """Refuse a file with two columns of one name: a share of one could carry the other.

    Raises:
        CatalogError: naming the file and the column.
    """
    if schema is None:
        return
    names = _names(path, schema)
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise CatalogError(
            f"{path} has two columns named {twins[0]!r}"
            + (f" (and more: {_some(twins[1:])})" if len(twins) > 1 else ""),
            hint="rename the columns in the file so every name is unique, then add it again",
        )


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    for fmt, suffixes in _SUFFIXES:
        if suffix in suffixes:
            return fmt
    return None


def _data_files(folder: Path) -> list[Path]:
    """The files a dataset of ``folder`` reads: pyarrow skips names starting with '.' or '_'."""
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts)
    )


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _check_folder(path: Path, fmt: str, dataset: ds.Dataset) -> None:
    """Refuse an empty folder, and one whose files disagree on the schema.

    A dataset takes its schema from its first file and reads the others into
    it, filling a column a file lacks with nulls. Files of different tables in
    one folder would then pass under one dataset's agreements: a column that
    only some files have would leave the node under a name that describes
    the others. So every file must have the first file's columns.

    Raises:
        CatalogError: as above, naming the file and the columns that differ.
    """
    assert isinstance(dataset, ds.FileSystemDataset)
    if not dataset.files:
        raise CatalogError(
            f"dataset folder {path} holds no {fmt} files",
            hint="point at the folder that holds the data files, or pass --format",
        )
    first: pa.Schema | None = None
    first_file = ""
    for fragment in dataset.get_fragments():
        try:
            schema = _decode_dictionaries(fragment.physical_schema)
        except (pa.ArrowException, OSError) as e:
            raise CatalogError(
                f"cannot read {fragment.path} as {fmt}: {e}",
                hint=f"check that it is a complete {fmt} file, or move it out of {path}",
            ) from e
        _names(fragment.path, schema)
        _check_twins(fragment.path, schema)
        if first is None:
            first, first_file = schema, fragment.path
            continue
        # By name: the scan matches columns by name, so their order may differ,
        # and a value of another type is converted or refused when the data is
        # read (node.catalog.verify).
        changes = SchemaChanges.between(first, schema)
        differ = [
            f"{what}: {_some(names)}"
            for what, names in (
                ("only in this file", changes.new),
                ("missing from this file", changes.dropped),
            )
            if names
        ]
        if differ:
            raise CatalogError(
                f"{fragment.path} does not have the schema of {first_file} "
                f"({'; '.join(differ)}): the files of one dataset must hold the same table",
                hint="move other tables' files to folders of their own and register each "
                "folder as its own dataset",
            )


def _decode_dictionaries(schema: pa.Schema) -> pa.Schema:
    # Chunks carry plain record-batch messages, so dictionary columns travel decoded.
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )


@dataclass(frozen=True)
class SchemaChanges:
    """How a re-registered dataset's columns differ from the registration it replaced."""

    #: Columns that did not exist before; they got the default label.
    new: list[str]
    #: Columns that no longer exist; their labels are gone.
    dropped: list[str]
    #: Columns whose type changed; they got the default label again.
    retyped: list[str]
    #: Columns that kept their reviewed label.
    kept: list[str]

    @classmethod
    def between(cls, old: pa.Schema, new: pa.Schema) -> SchemaChanges:
        before = {f.name: f.type for f in old}
        after = {f.name: f.type for f in new}
        return cls(
            new=[n for n in after if n not in before],
            dropped=[n for n in before if n not in after],
            retyped=[n for n in after if n in before and not before[n].equals(after[n])],
            kept=[n for n in after if n in before and before[n].equals(after[n])],
        )

    def to_json(self) -> dict[str, list[str]]:
        return {
            "new": self.new,
            "dropped": self.dropped,
            "retyped": self.retyped,
            "kept": self.kept,
        }


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a registered dataset's data is still what was registered.

    ``state`` is ``ok``, ``missing`` (the path is gone), ``modified`` (a file's
    size or modification time changed, or files came or went; the row count
    shown may be stale), ``schema-changed`` (shares are refused until it is
    re-registered) or ``unreadable``.
    """

    state: str
    detail: str = ""
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {"state": self.state, "detail": self.detail, "hint": self.hint}


_OK = DatasetStatus("ok")
# "size mtime_ns" per file: a string, as canonical JSON holds no integer above 2**53.
_Fingerprint = dict[str, str]


def _fingerprint(path: Path, files: list[str]) -> _Fingerprint:
    """Each file's size and modification time, keyed by its path relative to ``path``."""
    prints: _Fingerprint = {}
    for file in files:
        stat = Path(file).stat()
        key = "." if Path(file) == path else Path(file).relative_to(path).as_posix()
        prints[key] = f"{stat.st_size} {stat.st_mtime_ns}"
    return prints


def _files_of(dataset: ds.Dataset) -> list[str]:
    return sorted(dataset.files) if isinstance(dataset, ds.FileSystemDataset) else []


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
        description: str | None = None,
        replace: bool = False,
        on_progress: Callable[[ReadProgress], None] | None = None,
    ) -> DatasetInfo:
        """Register a dataset after reading it in full as a share would.

        ``replace`` re-registers an existing name (its data changed shape); the
        agreements naming it then apply to the new schema, column by column.
        Columns that keep their name and type keep their registered label, and
        the description stays, unless ``labels`` or ``description`` say
        otherwise. ``on_progress`` receives the rows and bytes read so far
        while the data is read. Nothing is registered unless every row converts.

        Raises:
            CatalogError: bad name, duplicate name (without ``replace``),
                unreadable data, a value that does not convert to its column's
                type, a label for a column that does not exist, or an unknown
                label.
        """
        if not is_dataset_name(name):
            raise CatalogRequestError(
                f"dataset name {name!r} is not valid",
                hint="use 1-64 lowercase letters, digits, '_', '.', '-', starting with a letter "
                "or digit",
            )
        try:
            # Resolved once: the catalog keeps reading the file the operator
            # registered, even if a link on the way is later pointed elsewhere.
            path = path.resolve()
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
            raise CatalogError(
                f"cannot resolve dataset path {path}: {e}",
                hint="check the symbolic links on the way to the data",
            ) from e
        fmt = detect_format(path, fmt)
        previous = self._find(name)
        if previous is not None and not replace:
            raise _duplicate(name)
        dataset = open_dataset(path, fmt)
        schema = _decode_dictionaries(dataset.schema)
        given = dict(labels or {})
        unknown = sorted(set(given) - set(schema.names))
        if unknown:
            raise CatalogRequestError(
                f"labels name columns not in {name}: {', '.join(unknown)}",
                hint=f"columns are: {', '.join(schema.names)}",
            )
        for column, label in given.items():
            if label not in LABELS:
                raise CatalogRequestError(
                    f"label {label!r} for column {column!r} is not one of {', '.join(LABELS)}"
                )
        try:
            prints = _fingerprint(path, _files_of(dataset))
        except OSError as e:
            raise CatalogError(f"cannot read {path}: {e}") from e
        rows = read_all(dataset, fmt, on_progress)
        kept: set[str] = set()
        if previous is not None:
            kept = set(SchemaChanges.between(previous.schema, schema).kept)
        final = {
            f.name: given.get(f.name)
            or (previous.labels[f.name] if previous is not None and f.name in kept else None)
            or infer_label(f.name)
            for f in schema
        }
        if description is None:
            description = previous.description if previous is not None else ""
        info = DatasetInfo(name, path, fmt, schema, rows, final, description, int(time.time()))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
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
                self._db.execute(
                    "INSERT OR REPLACE INTO fingerprints VALUES (?, ?)",
                    (name, dumps(prints).decode()),
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as e:
                self._db.execute("ROLLBACK")
                raise _duplicate(name) from e
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return info

    def _find(self, name: str) -> DatasetInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, path, format, schema, rows, labels, description, added "
                "FROM datasets WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else self._info(row)

    def get(self, name: str) -> DatasetInfo:
        """The registered dataset ``name``.

        Raises:
            CatalogError: no dataset has that name.
        """
        info = self._find(name)
        if info is None:
            raise CatalogError(
                f"no dataset named {name!r} in the catalog", hint="see 'fednode dataset list'"
            )
        return info

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

    def status(self, info: DatasetInfo, *, schema: bool = True) -> DatasetStatus:
        """Whether ``info``'s data is still as registered, from file metadata only.

        Sizes and modification times are compared with those recorded at
        registration; with ``schema`` the current schema is read too (a file
        footer for Parquet and Arrow, the first block of a CSV). Never reads
        the data itself.
        """
        replace = _REPLACE_HINT.format(name=info.name, path=info.path)
        if not info.path.exists():
            return DatasetStatus(
                "missing",
                f"{info.path} no longer exists",
                f"restore it, or 'fednode dataset add {info.name} NEW_PATH --replace'",
            )
        with self._lock:
            row = self._db.execute(
                "SELECT files FROM fingerprints WHERE name = ?", (info.name,)
            ).fetchone()
        try:
            dataset = open_dataset(info.path, info.format) if schema or info.path.is_dir() else None
            files = _files_of(dataset) if dataset is not None else [str(info.path)]
            if (
                schema
                and dataset is not None
                and not _decode_dictionaries(dataset.schema).equals(info.schema)
            ):
                return DatasetStatus(
                    "schema-changed",
                    f"the columns or types of {info.path} changed since it was registered; "
                    "shares of it are refused",
                    replace,
                )
            current = _fingerprint(info.path, files)
        except (CatalogError, OSError) as e:
            return DatasetStatus("unreadable", str(e), replace)
        if row is None:
            return _OK
        recorded: _Fingerprint = dict(loads(str(row[0]).encode()))
        if current != recorded:
            changed = sorted(set(current) ^ set(recorded)) or sorted(
                k for k in current if current[k] != recorded.get(k)
            )
            return DatasetStatus(
                "modified",
                f"{info.path} changed since it was registered "
                f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}); "
                f"its row count ({info.rows:,}) and review may be out of date",
                replace,
            )
        return _OK

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
                hint=_REPLACE_HINT.format(name=name, path=info.path),
            )
        return info, dataset


def _duplicate(name: str) -> CatalogError:
    return CatalogError(
        f"dataset {name!r} is already registered",
        hint="choose another name, or pass --replace to register its new data under it "
        "(reviewed labels are kept)",
    )
