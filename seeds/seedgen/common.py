"""Random streams, pseudonyms and the batched Parquet writer shared by every table.

Invariants:

* A batch's random stream depends only on ``(seed, table, batch index)``, and the
  batch size is a module constant, so output never depends on how it is consumed.
* Direct identifiers (plates, resident numbers) are pseudonymised here, at the
  source, with a keyed HMAC. The clear identifier never reaches a column.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "BATCH_ROWS",
    "START",
    "Table",
    "batch_rng",
    "field",
    "pseudonym",
    "source_key",
    "timestamps",
    "write_table",
]

#: Rows per generated batch. Changing it changes every table, so it is fixed.
BATCH_ROWS = 65_536

#: First hour of the seed period: Monday 2 March 2026, local time (UTC+8).
# Seed times are naive local times by design: source systems record wall-clock time.
START = datetime(2026, 3, 2, 0, 0, 0)
_START_S = int((START - datetime(1970, 1, 1)).total_seconds())

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def batch_rng(seed: int, table: str, batch: int) -> np.random.Generator:
    """Return the random stream for one batch of one table.

    Args:
        seed: The generator seed given on the command line.
        table: A stable table name; it separates the streams of different tables.
        batch: The zero-based batch index.

    Returns:
        A PCG64 generator that no other ``(seed, table, batch)`` shares.
    """
    table_key = zlib.crc32(table.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, table_key, batch])))


def pseudonym(key: bytes, prefix: str, values: list[str]) -> list[str]:
    """Replace direct identifiers with keyed, stable tokens.

    Args:
        key: The source system's secret HMAC key; it never leaves that system.
        prefix: A short tag saying what kind of identifier the token stands for.
        values: The clear identifiers.

    Returns:
        One token per value: ``prefix`` followed by 16 hex digits of HMAC-SHA256.
    """
    return [
        prefix + hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest()[:16] for v in values
    ]


def source_key(seed: int, purpose: str) -> bytes:
    """Derive the demo HMAC key a source system would hold for ``purpose``.

    Args:
        seed: The generator seed.
        purpose: What the key pseudonymises, for domain separation.

    Returns:
        32 key bytes.
    """
    return hashlib.sha256(f"fednode-seeds/{seed}/{purpose}".encode()).digest()


def timestamps(hour_index: Ints, second_offset: Ints | None = None) -> pa.Array:
    """Convert hour indices from :data:`START` into a naive local ``timestamp[s]`` array.

    Args:
        hour_index: Hours since the start of the seed period.
        second_offset: Optional seconds within the hour.

    Returns:
        A pyarrow timestamp array.
    """
    seconds = _START_S + hour_index * 3600
    if second_offset is not None:
        seconds = seconds + second_offset
    return pa.array(seconds.astype(np.int64), type=pa.timestamp("s"))


@dataclass(frozen=True)
class Table:
    """A table the generator can write.

    Attributes:
        department: The department directory the file goes into.
        name: The file stem, also the dataset name in the demo federation.
        schema: The Arrow schema, with column descriptions as field metadata.
        rows: How many rows to produce.
        batch: Builds batch ``i`` holding ``n`` rows that start at row ``offset``.
    """

    department: str
    name: str
    schema: pa.Schema
    rows: int
    batch: Callable[[int, int, int], pa.RecordBatch]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the table in order, one bounded batch at a time."""
        for index, offset in enumerate(range(0, self.rows, BATCH_ROWS)):
            n = min(BATCH_ROWS, self.rows - offset)
            yield self.batch(index, offset, n)


def write_table(table: Table, out: Path) -> Path:
    """Write ``table`` to ``out/<department>/<name>.parquet`` batch by batch.

    The file is written under a temporary name and renamed into place, so a
    crash never leaves a truncated Parquet file that looks complete.

    Args:
        table: The table to write.
        out: The root output directory.

    Returns:
        The path of the written file.

    Raises:
        OSError: The directory cannot be created or the file cannot be written.
        pyarrow.ArrowInvalid: A batch does not match the declared schema.
    """
    target = out / table.department / f"{table.name}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    with pq.ParquetWriter(partial, table.schema, compression="zstd") as writer:
        for batch in table.batches():
            writer.write_batch(batch)
    partial.replace(target)
    return target


def field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    """Declare a column with its description stored as field metadata.

    Args:
        name: Column name.
        type_: Arrow type.
        doc: One-line description, stored as the field's ``description`` metadata.
        nullable: Whether the column may hold nulls.

    Returns:
        The Arrow field.
    """
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})
