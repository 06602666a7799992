"""Reading a catalogued dataset in batches with memory bounded by a few batches.

``pyarrow.dataset`` scanners run on an execution plan that reads ahead until
about a gibibyte is buffered when the consumer is slower than the disk, which
a share always is (it compresses and encrypts every batch). Measured on a
1.1 GB Parquet file, a share then held 260-540 MB of Arrow memory, and with
Parquet pre-buffering (the scanner's default) the whole file. So Parquet
files are read here one at a time with ``pyarrow.parquet.ParquetFile``, row
group by row group and without pre-buffering; row groups above 64 MiB go
through a buffered stream, a page at a time: a 200 MB file written as one row
group holds about 13 MB (without the stream, its whole column chunk: 200 MB). Arrow
IPC files are memory-mapped and their record batches sliced, so a file
written as one huge batch is not loaded whole either (a file with compressed
buffers still decompresses one whole record batch, all columns, at a time). Each batch is cast
to the dataset's schema, as the scanner would. CSV, and a file that lacks a
selected column (the scanner fills those with nulls), go through the dataset
scanner with its readahead at the minimum.

Invariant: the batches hold exactly ``columns``, typed as in the dataset's
schema, in file order; only those columns are read from disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["read_batches"]

_PARQUET_BUFFER = 1 << 20
#: Row groups up to this size (uncompressed) are read a column chunk at a time.
_UNBUFFERED_ROW_GROUP = 64 << 20


def _largest_row_group(metadata: pq.FileMetaData) -> int:
    return max(
        (metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)), default=0
    )


def read_batches(
    dataset: ds.Dataset, columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Yield the dataset's ``columns`` in batches of at most ``batch_rows`` rows.

    Raises:
        pyarrow.ArrowException, OSError: a file cannot be read or converted.
    """
    target = pa.schema([dataset.schema.field(name) for name in columns])
    if not isinstance(dataset, ds.FileSystemDataset):
        yield from _scan(dataset, columns, batch_rows)
    elif isinstance(dataset.format, ds.ParquetFileFormat):
        yield from _parquet(dataset, columns, batch_rows, target)
    elif isinstance(dataset.format, ds.IpcFileFormat) and isinstance(
        dataset.filesystem, pafs.LocalFileSystem
    ):
        yield from _arrow(dataset, columns, batch_rows, target)
    else:
        yield from _scan(dataset, columns, batch_rows)


def _parquet(
    dataset: ds.FileSystemDataset, columns: list[str], batch_rows: int, target: pa.Schema
) -> Iterator[pa.RecordBatch]:
    for fragment in dataset.get_fragments():
        with dataset.filesystem.open_input_file(fragment.path) as source:
            file = pq.ParquetFile(source, pre_buffer=False)
            if _largest_row_group(file.metadata) > _UNBUFFERED_ROW_GROUP:
                # A buffered stream reads a column chunk a page at a time; without
                # it, a file written as one row group is loaded whole. Only for
                # large row groups: the stream's extra copy costs a share of
                # ordinary files about 4% more CPU.
                file = pq.ParquetFile(
                    source, pre_buffer=False, buffer_size=_PARQUET_BUFFER, metadata=file.metadata
                )
            if not set(columns) <= set(file.schema_arrow.names):
                yield from _scan(fragment, columns, batch_rows, schema=dataset.schema)
                continue
            for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch if batch.schema.equals(target) else batch.cast(target)


def _arrow(
    dataset: ds.FileSystemDataset, columns: list[str], batch_rows: int, target: pa.Schema
) -> Iterator[pa.RecordBatch]:
    for fragment in dataset.get_fragments():
        # Memory-mapped: a record batch's buffers are pages of the file, read
        # only when touched, so neither its other columns nor its rows beyond
        # the current slice take memory. The slices keep the mapping alive
        # after the file is closed. (Selecting fields in IpcReadOptions would
        # copy the buffers out of the mapping instead: measured, pyarrow 26.)
        with pa.memory_map(fragment.path) as source:
            file = pa.ipc.open_file(source)
            if not set(columns) <= set(file.schema.names):
                yield from _scan(fragment, columns, batch_rows, schema=dataset.schema)
                continue
            for i in range(file.num_record_batches):
                batch = file.get_batch(i).select(columns)
                for start in range(0, batch.num_rows, batch_rows):
                    part = batch.slice(start, batch_rows)
                    yield part if part.schema.equals(target) else part.cast(target)


def _scan(
    source: ds.Dataset | ds.Fragment,
    columns: list[str],
    batch_rows: int,
    schema: pa.Schema | None = None,
) -> Iterator[pa.RecordBatch]:
    if isinstance(source, ds.Fragment):
        yield from source.to_batches(
            schema=schema, columns=columns, batch_size=batch_rows, batch_readahead=1
        )
    else:
        yield from source.scanner(
            columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1
        ).to_batches()
