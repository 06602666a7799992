"""Arrow IPC record-batch messages: checked before they are decoded, and written to a file as is.

A chunk carries one encapsulated Arrow IPC record-batch message
(``0xFFFFFFFF || int32 metadata length || Message flatbuffer || body``), whose
buffers are either plain or compressed one by one with zstd (Arrow's
``BodyCompression``, the same form ``pyarrow.feather`` writes). The receiver
reads only the metadata: the row count, the buffer layout and, for compressed
buffers, each buffer's declared decoded size. That is enough to refuse a
message whose structure would not read back, or that would decode to more
than :data:`MAX_DECODED_LEN`, without decompressing it (the buffers' contents
are checked only when a message is decoded, see
:meth:`RecordBatchMessage.decode`); and enough to append the
message unchanged to an Arrow IPC file, which then stays compressed the way
the data travelled, so the receiver never pays for decompressing and
re-encoding.

The flatbuffer reader here is deliberately small: it follows only the fields
named in Arrow's ``Message.fbs`` and ``File.fbs`` that these checks need, and
checks every offset against the buffer, because the bytes come from a peer;
pyarrow's own flatbuffer verifier runs on the metadata as well. A file footer
is pyarrow's own, with a vector of blocks appended (see :func:`file_footer`),
so no flatbuffer table is ever written by hand.

Invariants:

* :func:`read_batch_layout` returns only for a record-batch message that
  Arrow's verifier accepts, whose node and buffer counts equal the schema's,
  whose columns are as long as the batch (at most :data:`MAX_CHUNK_ROWS`
  rows), whose field nodes hold at most :data:`MAX_CHUNK_ELEMENTS` elements
  between them (top-level and nested alike), whose buffers are aligned and
  lie inside its body, whose
  compression is the one the share allows, and whose decoded size is at most
  :data:`MAX_DECODED_LEN`; every other input raises
  :class:`~node.exchange.errors.MalformedEnvelopeError`.
* :class:`IpcMessageFileWriter` writes the layout pyarrow writes: magic,
  schema message, the messages, an end-of-stream marker, the footer.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from node.exchange.errors import MalformedEnvelopeError

__all__ = [
    "CONTINUATION",
    "MAX_CHUNK_ELEMENTS",
    "MAX_CHUNK_ROWS",
    "MAX_DECODED_LEN",
    "BatchLayout",
    "BatchTemplate",
    "IpcMessageFileWriter",
    "RecordBatchMessage",
    "file_footer",
    "read_batch_layout",
    "unsupported_type",
]

#: Bound on the decoded size of one message body. A compressed message decodes
#: to at most four times the largest chunk: large enough that per-chunk costs
#: stay small next to the data, small enough that decoding one stays a small
#: multiple of the chunk window.
MAX_DECODED_LEN = 16 * 1024 * 1024
#: Bound on the rows of one message. Columns can be narrower than a bit per row
#: (a null column has no buffers at all), so the byte bound alone would let a
#: tiny chunk declare billions of rows for the receiver to write.
MAX_CHUNK_ROWS = 1 << 20
#: Bound on the elements of one message: the sum of the lengths of all its field
#: nodes, nested ones included. A nested node's length is not tied to the row
#: count (a list row holds any number of items) and some nodes have no buffers
#: of their own (null types, structs, fixed-size lists), so only this bound
#: keeps what a reader builds from a tiny message (Parquet writes a definition
#: and a repetition level per element) proportional to the chunk window. At
#: one element per byte of :data:`MAX_DECODED_LEN`, ordinary columns (every
#: element at least a byte in some buffer) never reach it before the byte
#: bound; the sender splits the rare chunk that would (see
#: :func:`message_elements`).
MAX_CHUNK_ELEMENTS = MAX_DECODED_LEN
CONTINUATION = b"\xff\xff\xff\xff"
_MAGIC = b"ARROW1"
_END_OF_STREAM = CONTINUATION + b"\x00\x00\x00\x00"
_METADATA_V5 = 4
_HEADER_RECORD_BATCH = 3
_CODEC_ZSTD = 1
_METHOD_BUFFER = 0
_STRUCT16 = struct.Struct("<qq")  # FieldNode {length, null_count}; Buffer {offset, length}
_BLOCK = struct.Struct("<qi4xq")  # Block {offset, metaDataLength, (pad), bodyLength}
_I64 = struct.Struct("<q")


class _Flatbuffer:
    """Bounds-checked reads from one flatbuffer; every failure is MalformedEnvelopeError."""

    def __init__(self, data: memoryview, what: str) -> None:
        self.data = data
        self.what = what

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise MalformedEnvelopeError(f"{self.what}: offset {pos} is outside the metadata")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def root(self) -> _Table:
        return _Table(self, self._unpack("<I", 0))


class _Table:
    def __init__(self, buf: _Flatbuffer, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - buf._unpack("<i", pos)
        self.vtable_len = buf._unpack("<H", self.vtable)
        if self.vtable_len < 4 or self.vtable_len % 2:
            raise MalformedEnvelopeError(f"{buf.what}: malformed vtable at {self.vtable}")

    def field_position(self, index: int) -> int | None:
        """Where field ``index`` is stored in the buffer; ``None`` when absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_len:
            return None
        offset = self.buf._unpack("<H", self.vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int) -> int:
        pos = self.field_position(index)
        return default if pos is None else self.buf._unpack(fmt, pos)

    def table(self, index: int) -> _Table | None:
        pos = self.field_position(index)
        return None if pos is None else _Table(self.buf, pos + self.buf._unpack("<I", pos))

    def vector(self, index: int, item_size: int) -> tuple[int, int]:
        """``(start, count)`` of a vector of fixed-size items; ``(0, 0)`` when absent."""
        pos = self.field_position(index)
        if pos is None:
            return 0, 0
        start = pos + self.buf._unpack("<I", pos)
        count = self.buf._unpack("<I", start)
        if start + 4 + count * item_size > len(self.buf.data):
            raise MalformedEnvelopeError(f"{self.buf.what}: a vector runs past the metadata")
        return start + 4, count


@dataclass(frozen=True)
class BatchLayout:
    """What the receiver learns from a record-batch message without decoding it."""

    rows: int
    metadata_len: int  #: bytes before the body: prefix, flatbuffer and padding
    body_len: int
    decoded_len: int  #: the body's size once every buffer is decompressed
    compressed: bool
    #: Sum of the lengths of all field nodes: what a reader materialises per element.
    elements: int = 0


def unsupported_type(schema: pa.Schema) -> str | None:
    """Why a share cannot carry ``schema`` (``None`` if it can).

    Shares carry plain record batches of a fixed layout, so no column may be,
    or contain, a dictionary (its values travel in other messages), a union
    or a view type (their buffer counts vary), and there must be a column.
    Below the top level, a null type is refused: its elements take no bytes,
    so its length would be bounded by nothing but :data:`MAX_CHUNK_ELEMENTS`,
    and a fixed-size list whose single row would exceed that bound cannot
    travel in any chunk.
    """
    if not len(schema):
        return "the schema has no columns"
    pending = [(f.name, f.type, False) for f in schema]
    while pending:
        name, kind, nested = pending.pop()
        if pa.types.is_dictionary(kind):
            return f"column {name!r} is or holds a dictionary type; decode it first"
        if pa.types.is_union(kind):
            return f"column {name!r} is or holds a union type"
        if isinstance(kind, pa.ExtensionType):
            kind = kind.storage_type
        if (
            kind in (pa.string_view(), pa.binary_view())
            or pa.types.is_list_view(kind)
            or (pa.types.is_large_list_view(kind))
        ):
            return f"column {name!r} is or holds a view type"
        if nested and pa.types.is_null(kind):
            return f"column {name!r} holds a null type below the top level"
        if pa.types.is_fixed_size_list(kind) and kind.list_size > MAX_CHUNK_ELEMENTS:
            return (
                f"column {name!r} is or holds a fixed-size list of {kind.list_size} items, "
                f"above the {MAX_CHUNK_ELEMENTS} elements a chunk may hold"
            )
        pending += [(name, kind.field(i).type, True) for i in range(kind.num_fields)]
    return None


def _node_count(kind: pa.DataType) -> int:
    """Field nodes one column of ``kind`` takes: itself and, depth first, its children."""
    if isinstance(kind, pa.ExtensionType):
        kind = kind.storage_type
    return 1 + sum(_node_count(kind.field(i).type) for i in range(kind.num_fields))


@dataclass(frozen=True)
class BatchTemplate:
    """The layout every record-batch message of a schema must have."""

    nodes: int
    buffers: int
    #: Index of each top-level column's field node; its length is the batch's row count.
    top_level: tuple[int, ...]

    @classmethod
    def of(cls, schema: pa.Schema) -> BatchTemplate:
        """Learn the counts from pyarrow's own encoding of an empty batch of ``schema``.

        Raises:
            MalformedEnvelopeError: a share cannot carry the schema (see
                :func:`unsupported_type`).
        """
        reason = unsupported_type(schema)
        if reason is not None:
            raise MalformedEnvelopeError(f"the share's schema is not supported: {reason}")
        try:
            message = pa.RecordBatch.from_pylist([], schema=schema).serialize()
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise MalformedEnvelopeError(f"the share's schema is not supported: {e}") from e
        header = _record_batch_header(_bytes_view(message), "schema template")[0]
        top_level, at = [], 0
        for field in schema:
            top_level.append(at)
            at += _node_count(field.type)
        nodes = header.vector(1, 16)[1]
        if at != nodes or header.vector(4, 8)[1]:
            raise MalformedEnvelopeError("the share's schema has a layout shares do not carry")
        return cls(nodes=nodes, buffers=header.vector(2, 16)[1], top_level=tuple(top_level))


def _bytes_view(data: bytes | memoryview | pa.Buffer) -> memoryview:
    # pyarrow buffers export signed bytes; compare and slice them as unsigned.
    return memoryview(data).cast("B")


def _record_batch_header(data: memoryview, what: str) -> tuple[_Table, int, int]:
    """The RecordBatch table of an encapsulated message, its metadata length and body length."""
    if len(data) < 8 or data[:4] != CONTINUATION:
        raise MalformedEnvelopeError(f"{what}: not an encapsulated Arrow IPC message")
    (flatbuffer_len,) = struct.unpack_from("<i", data, 4)
    metadata_len = 8 + flatbuffer_len
    if flatbuffer_len <= 0 or metadata_len % 8 or metadata_len > len(data):
        raise MalformedEnvelopeError(f"{what}: metadata length {flatbuffer_len} is invalid")
    message = _Flatbuffer(data[8:metadata_len], what).root()
    version = message.scalar(0, "<h", 0)
    if version != _METADATA_V5:
        raise MalformedEnvelopeError(f"{what}: Arrow metadata version {version}, expected V5")
    kind = message.scalar(1, "<B", 0)
    if kind != _HEADER_RECORD_BATCH:
        raise MalformedEnvelopeError(f"{what}: message type {kind} is not a record batch")
    header = message.table(2)
    if header is None:
        raise MalformedEnvelopeError(f"{what}: record batch message without a header")
    body_len = message.scalar(3, "<q", 0)
    if body_len != len(data) - metadata_len:
        raise MalformedEnvelopeError(
            f"{what}: declares a {body_len}-byte body but carries {len(data) - metadata_len}"
        )
    if body_len % 8:
        # Arrow pads bodies to 8 bytes; an IPC file refuses a block that is not.
        raise MalformedEnvelopeError(f"{what}: body length {body_len} is not a multiple of 8")
    try:
        # pyarrow's own flatbuffer verifier (alignment, bounds, nesting) on the
        # metadata; the body is only sliced, never read.
        pa.ipc.read_message(pa.py_buffer(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise MalformedEnvelopeError(f"{what}: Arrow rejects the message metadata: {e}") from e
    return header, metadata_len, body_len


def read_batch_layout(
    message: bytes | memoryview | pa.Buffer, template: BatchTemplate, *, allow_zstd: bool, what: str
) -> BatchLayout:
    """Check one encapsulated record-batch message against ``template`` and bound its size.

    Raises:
        MalformedEnvelopeError: the message is not a well-formed record batch
            of the template's shape, uses a compression the share does not
            allow, or would decode to more than :data:`MAX_DECODED_LEN` bytes.
    """
    data = _bytes_view(message)
    header, metadata_len, body_len = _record_batch_header(data, what)
    fb = header.buf
    rows = header.scalar(0, "<q", 0)
    nodes_at, nodes = header.vector(1, 16)
    buffers_at, buffers = header.vector(2, 16)
    if not 0 <= rows <= MAX_CHUNK_ROWS:
        raise MalformedEnvelopeError(
            f"{what}: declares {rows} rows; a chunk holds 0 to {MAX_CHUNK_ROWS}"
        )
    if nodes != template.nodes or buffers != template.buffers:
        raise MalformedEnvelopeError(
            f"{what}: {rows} rows in {nodes} nodes and {buffers} buffers does not fit the "
            f"schema ({template.nodes} nodes, {template.buffers} buffers)"
        )
    if header.vector(4, 8)[1]:
        raise MalformedEnvelopeError(f"{what}: carries variadic buffers the schema has none of")
    top_level = set(template.top_level)
    elements = 0
    for i, (length, nulls) in enumerate(
        _STRUCT16.iter_unpack(fb.data[nodes_at : nodes_at + 16 * nodes])
    ):
        if length < 0 or not 0 <= nulls <= length:
            raise MalformedEnvelopeError(f"{what}: field node {i} has invalid counts")
        if i in top_level and length != rows:
            raise MalformedEnvelopeError(
                f"{what}: column node {i} has {length} rows, the batch says {rows}"
            )
        # Every node counts, nested ones included: a child's length is not tied
        # to the rows, and a node without buffers costs its reader per element.
        elements += length
    if elements > MAX_CHUNK_ELEMENTS:
        raise MalformedEnvelopeError(
            f"{what}: its field nodes hold {elements} elements; a chunk holds at most "
            f"{MAX_CHUNK_ELEMENTS}"
        )
    compression = header.table(3)
    compressed = compression is not None
    if compression is not None:
        codec = compression.scalar(0, "<b", 0)
        method = compression.scalar(1, "<b", _METHOD_BUFFER)
        if not allow_zstd or codec != _CODEC_ZSTD or method != _METHOD_BUFFER:
            raise MalformedEnvelopeError(
                f"{what}: body compression (codec {codec}, method {method}) is not allowed "
                f"by the header ({'zstd buffers' if allow_zstd else 'no compression'})"
            )
    body = data[metadata_len:]
    decoded = 0
    for i in range(buffers):
        offset, length = _STRUCT16.unpack_from(fb.data, buffers_at + 16 * i)
        if offset < 0 or length < 0 or offset + length > body_len:
            raise MalformedEnvelopeError(f"{what}: buffer {i} lies outside the message body")
        if offset % 8:
            raise MalformedEnvelopeError(f"{what}: buffer {i} is not 8-byte aligned")
        if compressed and length:
            if length < 8:
                raise MalformedEnvelopeError(f"{what}: compressed buffer {i} has no size prefix")
            (size,) = _I64.unpack_from(body, offset)
            if size < -1:
                raise MalformedEnvelopeError(f"{what}: buffer {i} declares a negative size")
            length = length - 8 if size == -1 else size
        decoded += length + (-length % 8)
        if decoded > MAX_DECODED_LEN:
            raise MalformedEnvelopeError(
                f"{what}: decodes to more than the {MAX_DECODED_LEN}-byte limit "
                "(checked before anything is decompressed)"
            )
    return BatchLayout(rows, metadata_len, body_len, decoded, compressed, elements)


def message_elements(message: bytes | memoryview | pa.Buffer) -> int:
    """The sum of the field node lengths of a record-batch message this node encoded.

    The sender's measure of :data:`MAX_CHUNK_ELEMENTS`, read from the
    metadata alone, without the checks :func:`read_batch_layout` applies to a
    peer's bytes.

    Raises:
        MalformedEnvelopeError: the message is not an encapsulated record batch.
    """
    data = _bytes_view(message)
    if len(data) < 8 or data[:4] != CONTINUATION:
        raise MalformedEnvelopeError("not an encapsulated Arrow IPC message")
    (flatbuffer_len,) = struct.unpack_from("<i", data, 4)
    header = _Flatbuffer(data[8 : 8 + flatbuffer_len], "encoded message").root().table(2)
    if header is None:
        raise MalformedEnvelopeError("encoded message has no record batch header")
    nodes_at, nodes = header.vector(1, 16)
    view = header.buf.data[nodes_at : nodes_at + 16 * nodes]
    return sum(length for length, _ in _STRUCT16.iter_unpack(view))


@dataclass(frozen=True)
class RecordBatchMessage:
    """A checked record-batch message of one chunk, still in its wire form."""

    data: bytes
    layout: BatchLayout
    schema: pa.Schema
    index: int  #: the chunk it arrived in, for error messages

    @property
    def rows(self) -> int:
        return self.layout.rows

    def decode(self) -> pa.RecordBatch:
        """Decompress (if needed) and read the batch.

        Raises:
            MalformedEnvelopeError: the buffers do not decode (corrupt zstd)
                or do not validate (buffers too short, offsets out of range,
                invalid UTF-8) under the header's schema.
        """
        try:
            batch = pa.ipc.read_record_batch(pa.py_buffer(self.data), self.schema)
            # Full validation (buffer sizes, offsets, UTF-8) costs about 0.15 s/GB and
            # keeps a malformed batch from being read past its buffers downstream.
            batch.validate(full=True)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise MalformedEnvelopeError(
                f"chunk {self.index} does not decode as a record batch of the header schema: {e}"
            ) from e
        if batch.num_rows != self.layout.rows:
            raise MalformedEnvelopeError(f"chunk {self.index} decodes to a different row count")
        return batch


def file_footer(schema: pa.Schema, blocks: Collection[tuple[int, int, int]]) -> bytes:
    """The footer of an Arrow IPC file holding record batches at ``blocks``, with its
    length and closing magic.

    ``blocks`` are ``(offset, metadata_len, body_len)`` per message. pyarrow
    writes the footer of a one-batch file, which holds the schema; a vector of
    ``blocks`` is appended to it and the footer's ``recordBatches`` offset is
    pointed at it (flatbuffer offsets are relative and point forward, so the
    rest stays valid and the old one-block vector is simply unreferenced).
    Memory is 24 bytes per block, and no flatbuffer table is written here.
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema))
    written = sink.getvalue().to_pybytes()
    (footer_len,) = struct.unpack_from("<i", written, len(written) - 10)
    footer = bytearray(written[len(written) - 10 - footer_len : len(written) - 10])
    field = _Flatbuffer(memoryview(footer), "file footer").root().field_position(3)
    if field is None:
        raise RuntimeError("pyarrow wrote a file footer without record batches")
    # The blocks hold 8-byte integers, so they start on a multiple of 8.
    footer += bytes(-(len(footer) + 4) % 8)
    vector = len(footer)
    footer += struct.pack("<I", len(blocks))
    footer += b"".join(_BLOCK.pack(*block) for block in blocks)
    struct.pack_into("<I", footer, field, vector - field)
    return bytes(footer) + struct.pack("<i", len(footer)) + _MAGIC


def _write_all(file: BinaryIO, data: bytes | memoryview | pa.Buffer) -> None:
    """Write every byte: a raw file may take fewer than asked (a full disk, a size limit)."""
    view = _bytes_view(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(f"could not write {len(view)} more bytes")
        view = view[written:]


class _Blocks:
    """Footer blocks kept as three machine integers each (24 bytes a block, no
    Python object per block), so a share of many small chunks costs the
    writer little more than the footer it will write."""

    def __init__(self) -> None:
        self._values = array("q")

    def append(self, offset: int, metadata_len: int, body_len: int) -> None:
        self._values.extend((offset, metadata_len, body_len))

    def __len__(self) -> int:
        return len(self._values) // 3

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        values = iter(self._values)
        return zip(values, values, values, strict=True)

    def __contains__(self, block: object) -> bool:
        return block in set(self)


class IpcMessageFileWriter:
    """Append checked record-batch messages, unchanged, to an Arrow IPC file."""

    def __init__(self, file: BinaryIO, schema: pa.Schema) -> None:
        self._file = file
        self._schema = schema
        self._blocks = _Blocks()
        head = _MAGIC + b"\x00\x00" + schema.serialize().to_pybytes()
        _write_all(file, head)
        self._pos = len(head)

    def write(self, message: bytes | memoryview | pa.Buffer, layout: BatchLayout) -> None:
        """Append one message checked by :func:`read_batch_layout`.

        Raises:
            OSError: the write failed.
        """
        _write_all(self._file, message)
        self._blocks.append(self._pos, layout.metadata_len, layout.body_len)
        self._pos += layout.metadata_len + layout.body_len

    def close(self) -> None:
        """Write the end-of-stream marker and the footer (the file object stays open).

        Raises:
            OSError: the write failed.
        """
        _write_all(self._file, _END_OF_STREAM + file_footer(self._schema, self._blocks))
