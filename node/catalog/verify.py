"""Reading a dataset in full when it is registered, exactly as a share would read it.

Counting a CSV's rows converts nothing, and the column types a CSV dataset is
read with are inferred from the start of the file. A value further down that
does not fit its column (``unknown`` in an integer column at row 250,000)
would surface only when a share reached it, as a failed share. Registration
therefore reads every batch through :func:`node.catalog.source.read_batches`,
the share path's own reader, with the same schema, and refuses the dataset
at the first value that does not convert.

Parquet and Arrow IPC files carry their types. A file whose own schema has the
dataset's types for every column cannot fail conversion, so its rows are
counted from its metadata; only files whose types differ (a directory of
files written at different times) are read in full.

Progress is reported in bytes of the dataset's files, so an operator sees a
percentage. Arrow's CSV reader reads far ahead of conversion, so the bytes it
has read say little about the work done; instead a CSV is read in the
reader's own blocks (one batch per block, never split by a row limit), and
after ``k`` batches ``k`` blocks of the file are converted, within one line.
A file read in full in another format counts its share of rows converted.

Invariants: memory stays bounded by the reader's few batches, never the file;
the row count returned is the number of rows a share of the dataset would read;
the bytes reported never decrease and never exceed the total.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from node.catalog.source import read_batches
from node.errors import CatalogError

__all__ = ["VERIFY_BATCH_ROWS", "ConversionSite", "ReadProgress", "conversion_site", "read_all"]

#: Rows per batch of the registration read of Parquet and Arrow files: the share
#: path's batch size. CSV is read in the reader's blocks instead (see above).
VERIFY_BATCH_ROWS = 256 * 1024
# Larger than any CSV block holds, so the scanner never splits a block's batch
# and batches count blocks. Conversion does not depend on the batch size.
_WHOLE_BLOCKS = 2**31 - 1
# Arrow reads these CSV files through a decompressor: their blocks are counted
# in uncompressed bytes, so only a finished file counts towards the progress.
_COMPRESSED = frozenset({".gz", ".bz2", ".lz4", ".zst", ".zstd", ".br", ".brotli"})

# Arrow's CSV reader reports a conversion failure as, for example,
# "In CSV column #1: Row #250001: CSV conversion error to int64: invalid value 'unknown'".
# The row number counts lines from 1 with the header included; Arrow leaves it
# out when values may hold newlines.
_CSV_CONVERSION = re.compile(
    r"In CSV column #(?P<column>\d+): (?:Row #(?P<line>\d+): )?"
    r"CSV conversion error to (?P<type>[^:]+): invalid value '(?P<value>.*)'",
    re.DOTALL,
)
_VALUE_SHOWN = 60


@dataclass(frozen=True)
class ReadProgress:
    """How far the registration read is: rows converted, and bytes of the files behind them."""

    rows: int
    bytes_read: int
    #: The size of the dataset's files; ``None`` when they are not known.
    bytes_total: int | None


_OnProgress = Callable[[ReadProgress], None]


class _Tally:
    """The running totals of one registration read, reported after every batch."""

    def __init__(self, total: int | None, on_progress: _OnProgress | None) -> None:
        self.rows = 0
        self.done = 0
        self._total = total
        self._on_progress = on_progress

    def report(self, within: int = 0) -> None:
        """Report; ``within`` is the bytes converted of the file being read."""
        if self._on_progress is not None:
            read = self.done + within
            if self._total is not None:
                read = min(read, self._total)
            self._on_progress(ReadProgress(self.rows, read, self._total))


def read_all(
    dataset: ds.Dataset,
    fmt: str,
    on_progress: _OnProgress | None = None,
) -> int:
    """Read ``dataset`` as a share would and return its row count.

    ``on_progress`` is called with a :class:`ReadProgress` after every batch read.

    Raises:
        CatalogError: a value does not convert to its column's type (naming the
            column, the line and the value), or a file cannot be read.
    """
    schema = dataset.schema
    fragments = list(dataset.get_fragments()) if isinstance(dataset, ds.FileSystemDataset) else []
    if not fragments:
        tally = _Tally(None, on_progress)
        _read(dataset, schema, "the dataset", tally, VERIFY_BATCH_ROWS, _no_bytes)
        return tally.rows
    try:
        sizes = [Path(fragment.path).stat().st_size for fragment in fragments]
    except OSError as e:
        raise CatalogError(f"cannot read {e.filename}: {e.strerror or e}") from e
    # A compressed CSV's converted bytes are not known until it ends: with only
    # such files the total is left unknown, so the display counts rows instead
    # of standing at 0% until the very end.
    unknowable = fmt == "csv" and all(
        Path(fragment.path).suffix.lower() in _COMPRESSED for fragment in fragments
    )
    tally = _Tally(None if unknowable else sum(sizes), on_progress)
    for fragment, size in zip(fragments, sizes, strict=True):
        where = Path(fragment.path).name
        if fmt == "csv":
            single = ds.FileSystemDataset([fragment], schema, dataset.format, dataset.filesystem)
            _read(single, schema, where, tally, _WHOLE_BLOCKS, _csv_bytes(dataset, fragment, size))
        elif _types_fixed(fragment, schema):
            try:
                tally.rows += fragment.count_rows()
            except (pa.ArrowException, OSError) as e:
                raise CatalogError(f"cannot read {fragment.path}: {e}") from e
        else:
            single = ds.FileSystemDataset([fragment], schema, dataset.format, dataset.filesystem)
            _read(single, schema, where, tally, VERIFY_BATCH_ROWS, _row_share_bytes(fragment, size))
        tally.done += size
        tally.report()
    return tally.rows


# Bytes of the file being read that are converted, from the batches and rows read so far.
_Converted = Callable[[int, int], int]


def _no_bytes(batches: int, rows: int) -> int:
    return 0


def _csv_bytes(dataset: ds.FileSystemDataset, fragment: ds.Fragment, size: int) -> _Converted:
    """A CSV file's bytes converted after ``batches`` batches, each one of the reader's blocks."""
    if Path(fragment.path).suffix.lower() in _COMPRESSED:
        return _no_bytes
    block = int(dataset.format.default_fragment_scan_options.read_options.block_size)
    return lambda batches, _rows: min(size, batches * block)


def _row_share_bytes(fragment: ds.Fragment, size: int) -> _Converted:
    """Bytes of a self-describing file converted, as its share of the rows read."""
    try:
        rows = fragment.count_rows()
    except (pa.ArrowException, OSError) as e:
        raise CatalogError(f"cannot read {fragment.path}: {e}") from e
    return lambda _batches, done: size * done // rows if rows else 0


def _types_fixed(fragment: ds.Fragment, schema: pa.Schema) -> bool:
    # A self-describing file whose columns already have the dataset's types is
    # read without conversion, so nothing in it can fail to convert.
    try:
        physical = fragment.physical_schema
    except (pa.ArrowException, OSError) as e:
        raise CatalogError(f"cannot read {fragment.path}: {e}") from e
    return all(
        physical.get_field_index(field.name) >= 0
        and physical.field(field.name).type.equals(field.type)
        for field in schema
    )


def _read(
    dataset: ds.Dataset,
    schema: pa.Schema,
    where: str,
    tally: _Tally,
    batch_rows: int,
    converted: _Converted,
) -> None:
    """Read every batch of ``dataset``, reporting after each."""
    batches = rows = 0
    try:
        for batch in read_batches(dataset, schema.names, batch_rows):
            batches += 1
            rows += batch.num_rows
            tally.rows += batch.num_rows
            tally.report(converted(batches, rows))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _conversion_error(e, schema, where) from e


@dataclass(frozen=True)
class ConversionSite:
    """Where a CSV value failed to convert, as Arrow's message tells it."""

    column: str
    #: The file's line, counting from 1 with the header; ``None`` when Arrow leaves it out.
    line: int | None
    type: str
    #: The value as Arrow quotes it: for the local operator only, never for a peer or the ledger.
    value: str

    @property
    def at(self) -> str:
        if self.line is None:
            return "a row"
        return f"line {self.line} (data row {self.line - 1:,})"


def conversion_site(error: Exception, schema: pa.Schema) -> ConversionSite | None:
    """The column, line and type of a CSV conversion failure, if ``error`` is one.

    ``schema`` is the dataset's full schema: Arrow numbers the file's columns.
    """
    match = _CSV_CONVERSION.search(str(error))
    if match is None:
        return None
    index = int(match["column"])
    return ConversionSite(
        column=schema.names[index] if index < len(schema) else f"#{index + 1}",
        line=int(match["line"]) if match["line"] else None,
        type=match["type"],
        value=match["value"],
    )


def _conversion_error(error: Exception, schema: pa.Schema, where: str) -> CatalogError:
    site = conversion_site(error, schema)
    if site is None:
        return CatalogError(
            f"cannot read {where} as registered: {error}",
            hint="fix the file so every row has the columns and types of the first rows, "
            "then add it again",
        )
    column, value = site.column, site.value
    if len(value) > _VALUE_SHOWN:
        value = value[:_VALUE_SHOWN] + "..."
    return CatalogError(
        f"column {column!r} of {where} holds {value!r} at {site.at}, which is not "
        f"{site.type} like the rows before it",
        hint=f"correct or empty that value (an empty cell reads as null), or give {column!r} "
        "one type throughout the file, then add the dataset again",
    )
