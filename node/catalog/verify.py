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

Invariants: memory stays bounded by the reader's few batches, never the file;
the row count returned is the number of rows a share of the dataset would read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from node.catalog.source import read_batches
from node.errors import CatalogError

__all__ = ["VERIFY_BATCH_ROWS", "read_all"]

#: Rows per batch of the registration read: the share path's batch size.
VERIFY_BATCH_ROWS = 256 * 1024

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


def read_all(
    dataset: ds.Dataset,
    fmt: str,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Read ``dataset`` as a share would and return its row count.

    ``on_rows`` is called with the running row count after every batch read.

    Raises:
        CatalogError: a value does not convert to its column's type (naming the
            column, the line and the value), or a file cannot be read.
    """
    schema = dataset.schema
    fragments = list(dataset.get_fragments()) if isinstance(dataset, ds.FileSystemDataset) else []
    if not fragments:
        return _read(dataset, schema, "the dataset", 0, on_rows)
    rows = 0
    for fragment in fragments:
        where = Path(fragment.path).name
        if fmt != "csv" and _types_fixed(fragment, schema):
            try:
                rows += fragment.count_rows()
            except (pa.ArrowException, OSError) as e:
                raise CatalogError(f"cannot read {fragment.path}: {e}") from e
            if on_rows is not None:
                on_rows(rows)
            continue
        single = ds.FileSystemDataset([fragment], schema, dataset.format, dataset.filesystem)
        rows = _read(single, schema, where, rows, on_rows)
    return rows


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
    rows: int,
    on_rows: Callable[[int], None] | None,
) -> int:
    try:
        for batch in read_batches(dataset, schema.names, VERIFY_BATCH_ROWS):
            rows += batch.num_rows
            if on_rows is not None:
                on_rows(rows)
    except (pa.ArrowException, OSError) as e:
        raise _conversion_error(e, schema, where) from e
    return rows


def _conversion_error(error: Exception, schema: pa.Schema, where: str) -> CatalogError:
    match = _CSV_CONVERSION.search(str(error))
    if match is None:
        return CatalogError(
            f"cannot read {where} as registered: {error}",
            hint="fix the file so every row has the columns and types of the first rows, "
            "then add it again",
        )
    index = int(match["column"])
    column = schema.names[index] if index < len(schema) else f"#{index + 1}"
    value = match["value"]
    if len(value) > _VALUE_SHOWN:
        value = value[:_VALUE_SHOWN] + "..."
    line = match["line"]
    at = f"line {line} (data row {int(line) - 1:,})" if line else "a row"
    return CatalogError(
        f"column {column!r} of {where} holds {value!r} at {at}, which is not "
        f"{match['type']} like the rows before it",
        hint=f"correct or empty that value (an empty cell reads as null), or give {column!r} "
        "one type throughout the file, then add the dataset again",
    )
