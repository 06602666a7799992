"""Atomic output of a received share: temp file, fsync, rename, or nothing at all.

Invariant: the destination path either does not change, or holds the complete,
verified table.

Arrow IPC output receives each chunk's record-batch message unchanged (see
:class:`~node.exchange.ipc_message.IpcMessageFileWriter`), so a share sent
with zstd lands as a zstd-compressed Arrow IPC file, the form
``pyarrow.feather`` writes with zstd, and nothing is decompressed or
re-encoded on the way to disk. Parquet output decodes and validates each
batch and encodes Parquet, collecting batches into row groups of up to
:data:`ROW_GROUP_ROWS` rows, :data:`ROW_GROUP_BYTES` bytes or
:data:`ROW_GROUP_ELEMENTS` elements, whatever the sender's chunk sizes: a
Parquet writer holds every row group's metadata (per column) until the file
closes, so a row group per chunk would let a share of many small chunks grow
the receiver's memory with its length. Memory therefore stays within a row
group's worth of batches plus the chunk window.

While batches arrive, a background thread flushes what was written so far
every :data:`FLUSH_EVERY` bytes, so the disk writes overlap the transfer and
the final fsync has only the tail left to do; durability at commit is
unchanged. Batches go to a hidden temporary file in the destination's
directory (so the final rename stays on one file system);
:meth:`AtomicTableSink.commit` fsyncs it, renames it into place and fsyncs the
directory. Any other exit
removes the temporary file; one left by a crashed process (its name carries
the writer's pid) is removed by the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from node.errors import ExchangeError, OutputError
from node.exchange.ipc_message import (
    MAX_CHUNK_ELEMENTS,
    IpcMessageFileWriter,
    RecordBatchMessage,
)
from node.output_path import check_output

__all__ = ["FORMATS", "OVERWRITE_FLAG", "AtomicTableSink", "output_format"]

#: The ``share fetch`` option that lets an output replace an existing file.
OVERWRITE_FLAG = "--overwrite"

FORMATS = ("parquet", "arrow")
#: Bytes written between background flushes. Compressed shares write little
#: (a 273 MB table lands as 22 MB), so a large threshold would leave the whole
#: file to the final fsync, with both ends idle: measured, that fsync took
#: about 30 ms, a twentieth of the share. At 1 MiB the flushes run back to
#: back, one at a time, and the final fsync finds almost nothing left.
FLUSH_EVERY = 1024 * 1024
_FLUSH_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="share-flush")
#: Bounds of one Parquet row group: Arrow's default row count, and a size that
#: holds a few chunks' worth of decoded batches.
ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024
#: Elements (field node lengths, see ``ipc_message.MAX_CHUNK_ELEMENTS``) of one
#: row group: the Parquet writer builds levels per element.
ROW_GROUP_ELEMENTS = MAX_CHUNK_ELEMENTS
#: Batches waiting for a row group are merged into one once this many wait:
#: each batch costs an object per column, which a small chunk does not pay for.
_MERGE_BATCHES = 64
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
}


def output_format(path: Path, explicit: str | None = None) -> str:
    """Choose the output format: ``explicit`` if given, else from the extension.

    Raises:
        OutputError: the format is unknown or cannot be inferred (a usage error).
    """
    if explicit:
        if explicit not in FORMATS:
            raise OutputError(f"unknown output format {explicit!r}", hint="use parquet or arrow")
        return explicit
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(
            f"cannot tell the output format from {path.name!r}",
            hint="name the file .parquet or .arrow, or pass --format",
        )
    return fmt


def _fsync_path(path: Path, flags: int = os.O_RDONLY, *, datasync: bool = False) -> None:
    fd = os.open(path, flags)
    try:
        (os.fdatasync if datasync else os.fsync)(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(dest: Path) -> None:
    """Delete temporary files for ``dest`` left by a process that no longer runs (a crash)."""
    for leftover in dest.parent.glob(f".{glob.escape(dest.name)}.*.partial"):
        pid = leftover.name[len(dest.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                leftover.unlink()


class _RowGroup:
    """Decoded batches waiting to be written as one Parquet row group."""

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.bytes = 0
        self.elements = 0

    def add(self, batch: pa.RecordBatch, message: RecordBatchMessage) -> None:
        """Hold ``batch``, decoded from ``message``, counting what it keeps in memory.

        An uncompressed batch is a view of its message, so the larger of the
        two is what it costs.
        """
        self._batches.append(batch)
        self.rows += batch.num_rows
        self.bytes += max(len(message.data), message.layout.decoded_len)
        self.elements += message.layout.elements
        if len(self._batches) >= _MERGE_BATCHES:
            merged = pa.concat_batches(self._batches)
            self._batches = [merged]
            self.bytes = merged.get_total_buffer_size()

    def full(self) -> bool:
        return (
            self.rows >= ROW_GROUP_ROWS
            or self.bytes >= ROW_GROUP_BYTES
            or self.elements >= ROW_GROUP_ELEMENTS
        )

    def take(self, schema: pa.Schema) -> pa.Table:
        """The batches held, as one table; the row group starts empty again."""
        table = pa.Table.from_batches(self._batches, schema=schema)
        self._batches, self.rows, self.bytes, self.elements = [], 0, 0, 0
        return table


class AtomicTableSink:
    """Write record batches to ``dest`` so that it appears complete or not at all."""

    def __init__(
        self,
        dest: Path,
        schema: pa.Schema,
        fmt: str,
        *,
        overwrite: bool = False,
        validate: bool = False,
    ) -> None:
        """Create the hidden temporary file beside ``dest``.

        ``validate`` decodes and fully validates each message of an Arrow
        output before it is written; Parquet output decodes (and so
        validates) every message anyway.

        Raises:
            OutputError: ``dest`` exists (without ``overwrite``), its directory
                is missing, or the file cannot be created.
        """
        self.dest = dest
        check_output(dest, overwrite=overwrite, overwrite_flag=OVERWRITE_FLAG)
        try:
            _remove_stale_partials(dest)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial", dir=dest.parent
            )
            os.close(fd)
        except OSError as e:
            raise OutputError(f"cannot create output beside {dest}: {e}") from e
        self.tmp = Path(tmp)
        self._schema = schema
        self._parquet: pq.ParquetWriter | None = None
        self._row_group = _RowGroup()
        self._arrow: IpcMessageFileWriter | None = None
        self._file: io.FileIO | None = None
        try:
            if fmt == "parquet":
                self._parquet = pq.ParquetWriter(self.tmp, schema)
            else:
                # Unbuffered: every message is one large write, with no copy into a buffer.
                self._file = self.tmp.open("wb", buffering=0)
                self._arrow = IpcMessageFileWriter(self._file, schema)
        except BaseException as e:
            # Whatever went wrong, no temporary file outlives the failed constructor.
            if self._file is not None:
                self._file.close()
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            if isinstance(e, OSError | pa.ArrowException):
                raise ExchangeError(f"cannot create output beside {dest}: {e}") from e
            raise
        self._validate = validate
        self._open = True
        self.committed = False
        self._unflushed = 0
        self._flush: Future[None] | None = None
        self._flush_lock = threading.Lock()

    def _maybe_flush(self, nbytes: int) -> None:
        """Start a background flush once enough is written; re-raise a failed one.

        A failed flush must fail the share: Linux reports a writeback error
        only to descriptors open when it happened, so the final fsync, on a
        fresh descriptor, might not see it.
        """
        self._unflushed += nbytes
        if self._unflushed < FLUSH_EVERY:
            return
        with self._flush_lock:
            previous = self._flush
            if previous is not None:
                if not previous.done():
                    return  # one flush at a time; the next write starts another
                previous.result()
            self._unflushed = 0
            self._flush = _FLUSH_POOL.submit(_fsync_path, self.tmp, datasync=True)

    def _settle_flush(self) -> None:
        with self._flush_lock:
            pending, self._flush = self._flush, None
        if pending is not None:
            pending.result()

    def write(self, message: RecordBatchMessage) -> None:
        """Append one checked record-batch message to the temporary file.

        Raises:
            MalformedEnvelopeError: Parquet output, and the message does not decode.
            ExchangeError: the write failed (disk full, closed sink).
        """
        if not self._open:
            raise ExchangeError("output is already closed")
        try:
            if self._arrow is not None:
                if self._validate:
                    message.decode()
                self._arrow.write(message.data, message.layout)
                self._maybe_flush(len(message.data))
            else:
                self._row_group.add(message.decode(), message)
                if self._row_group.full():
                    self._write_row_group()
        except (OSError, pa.ArrowException) as e:
            raise ExchangeError(f"cannot write output {self.tmp}: {e}") from e

    def _write_row_group(self) -> None:
        assert self._parquet is not None
        table = self._row_group.take(self._schema)
        if table.num_rows:
            self._parquet.write_table(table, row_group_size=ROW_GROUP_ROWS)
            self._maybe_flush(table.nbytes)

    def _close(self, *, complete: bool = True) -> None:
        self._open = False
        try:
            if self._arrow is not None and complete:
                self._arrow.close()
            elif self._parquet is not None:
                if complete:
                    self._write_row_group()
                else:
                    self._row_group.take(self._schema)
                self._parquet.close()
        finally:
            if self._file is not None:
                self._file.close()

    def commit(self) -> None:
        """Close, fsync, rename into place, fsync the directory.

        Raises:
            ExchangeError: any step failed; the temporary file is then removed.
        """
        try:
            self._close()
            self._settle_flush()
            _fsync_path(self.tmp)
            self.tmp.replace(self.dest)
            _fsync_path(self.dest.parent)
        except (OSError, pa.ArrowException) as e:
            self.abort()
            raise ExchangeError(f"cannot finish output {self.dest}: {e}") from e
        self.committed = True

    def abort(self) -> None:
        """Discard everything written; never raises."""
        if self._open:
            with contextlib.suppress(Exception):
                self._close(complete=False)
        with contextlib.suppress(Exception):
            self._settle_flush()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> AtomicTableSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.abort()
