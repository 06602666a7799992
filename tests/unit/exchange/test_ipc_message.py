"""Arrow IPC record-batch messages: layout checks, decoding on demand, filing unchanged.

Messages come from :class:`node.exchange.envelope.MessageEncoder`, the real
sender side. Byte surgery locates fields with a small flatbuffer walker kept in
this file (following Arrow's ``Message.fbs``), independent of the module's own
reader, so a wrong offset in one cannot hide a wrong offset in the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import io
import struct
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import feather

from node.exchange import ipc_message as im
from node.exchange.envelope import MessageEncoder
from node.exchange.errors import MalformedEnvelopeError

COMPRESSIONS = ["zstd", "none"]


# -- Building messages ------------------------------------------------------------------


def encode(batch: pa.RecordBatch, compression: str) -> bytes:
    """The encapsulated message the sender puts in a chunk."""
    data: bytes = MessageEncoder(compression)(batch).to_pybytes()
    return data


def ints(rows: int = 100) -> pa.RecordBatch:
    """One int64 column without nulls: buffers are [validity (empty), data]."""
    return pa.record_batch({"n": pa.array(range(rows), pa.int64())})


def mixed_table(rows: int = 1000) -> pa.Table:
    """One column of every type a share commonly carries, with nulls where the type allows."""
    epoch = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return pa.table(
        {
            "i64": pa.array([i * 7 - 3000 if i % 11 else None for i in range(rows)], pa.int64()),
            "f64": pa.array([i / 3 for i in range(rows)], pa.float64()),
            "s": pa.array([f"row {i}" if i % 5 else None for i in range(rows)], pa.string()),
            "ls": pa.array(["x" * (i % 17) for i in range(rows)], pa.large_string()),
            "bin": pa.array([bytes([i % 256]) * (i % 9) for i in range(rows)], pa.binary()),
            "flag": pa.array([i % 3 == 0 if i % 4 else None for i in range(rows)], pa.bool_()),
            "day": pa.array(
                [datetime.date(2020, 1, 1) + datetime.timedelta(days=i) for i in range(rows)],
                pa.date32(),
            ),
            "at": pa.array(
                [epoch + datetime.timedelta(seconds=97 * i) for i in range(rows)],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array(
                [decimal.Decimal(i * 13 - 500) / 100 for i in range(rows)], pa.decimal128(12, 2)
            ),
            "tags": pa.array(
                [None if i % 7 == 0 else [i, None, -i][: i % 4] for i in range(rows)],
                pa.list_(pa.int64()),
            ),
            "pair": pa.array(
                [{"k": i, "v": f"v{i}"} if i % 6 else None for i in range(rows)],
                pa.struct([("k", pa.int32()), ("v", pa.string())]),
            ),
            "nothing": pa.nulls(rows),
        }
    )


def lz4_message(batch: pa.RecordBatch) -> bytes:
    """An LZ4-compressed record-batch message, cut from a stream as MessageEncoder cuts zstd."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    stream: bytes = sink.getvalue().to_pybytes()
    skip = 8 + int.from_bytes(stream[4:8], "little")
    return stream[skip:-8]


# -- Locating fields for byte surgery (Arrow Message.fbs) -------------------------------


def _u16(data: bytes | bytearray, pos: int) -> int:
    return int(struct.unpack_from("<H", data, pos)[0])


def _u32(data: bytes | bytearray, pos: int) -> int:
    return int(struct.unpack_from("<I", data, pos)[0])


def _field_pos(data: bytes | bytearray, table: int, index: int) -> int:
    """Absolute position of field ``index`` of the table at ``table``; the field must be set."""
    vtable = table - int(struct.unpack_from("<i", data, table)[0])
    assert 4 + 2 * index + 2 <= _u16(data, vtable), f"field {index} is not in the vtable"
    offset = _u16(data, vtable + 4 + 2 * index)
    assert offset, f"field {index} is not set"
    return table + offset


def _deref(data: bytes | bytearray, pos: int) -> int:
    return pos + _u32(data, pos)


def message_table(data: bytes | bytearray) -> int:
    """The Message table; the flatbuffer starts after the 8-byte prefix."""
    return _deref(data, 8)


def batch_table(data: bytes | bytearray) -> int:
    """The RecordBatch table (Message field 2, ``header``)."""
    return _deref(data, _field_pos(data, message_table(data), 2))


def vector(data: bytes | bytearray, table: int, index: int) -> tuple[int, int]:
    """``(position of the first item, item count)`` of a vector field."""
    start = _deref(data, _field_pos(data, table, index))
    return start + 4, _u32(data, start)


def buffer_descriptors(data: bytes | bytearray) -> list[tuple[int, int, int]]:
    """``(descriptor position, offset, length)`` of each buffer (RecordBatch field 2)."""
    start, count = vector(data, batch_table(data), 2)
    return [
        (start + 16 * i, *struct.unpack_from("<qq", data, start + 16 * i)) for i in range(count)
    ]


def body_start(data: bytes | bytearray) -> int:
    return 8 + int(struct.unpack_from("<i", data, 4)[0])


def data_buffer_at(data: bytes | bytearray) -> int:
    """Absolute position of the data buffer of a single int64 column without nulls."""
    (_, _, validity_len), (_, offset, _) = buffer_descriptors(data)
    assert validity_len == 0, "an int64 column without nulls carries no validity bitmap"
    return body_start(data) + offset


def layout_of(data: bytes | bytearray, schema: pa.Schema, *, allow_zstd: bool) -> im.BatchLayout:
    return im.read_batch_layout(
        bytes(data), im.BatchTemplate.of(schema), allow_zstd=allow_zstd, what="chunk 7"
    )


# -- Round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_messages_filed_unchanged_read_back_as_the_source_table(
    compression: str, tmp_path: Path
) -> None:
    table = mixed_table()
    batches = table.to_batches(max_chunksize=300)
    assert len(batches) == 4
    template = im.BatchTemplate.of(table.schema)
    path = tmp_path / "share.arrow"
    with path.open("wb") as f:
        writer = im.IpcMessageFileWriter(f, table.schema)
        for batch in batches:
            message = encode(batch, compression)
            layout = im.read_batch_layout(
                message, template, allow_zstd=compression == "zstd", what="chunk"
            )
            assert layout.rows == batch.num_rows
            assert layout.compressed is (compression == "zstd")
            assert layout.metadata_len + layout.body_len == len(message)
            plain = im.read_batch_layout(
                encode(batch, "none"), template, allow_zstd=False, what="chunk"
            )
            assert plain.decoded_len == plain.body_len
            if compression == "zstd":
                assert layout.decoded_len == plain.body_len
                assert layout.body_len < plain.body_len
            writer.write(message, layout)
        writer.close()

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        assert reader.num_record_batches == len(batches)
        assert reader.schema.equals(table.schema)
        read = reader.read_all()
    assert read.equals(table)
    read.validate(full=True)
    assert feather.read_table(path).equals(table)


def test_layout_sizes_match_figures_computed_by_hand() -> None:
    # A figure computed by hand: 100 int64 values are 800 bytes, no bitmap, no padding.
    layout = layout_of(encode(ints(100), "none"), ints().schema, allow_zstd=False)
    assert (layout.rows, layout.body_len, layout.decoded_len, layout.compressed) == (
        100,
        800,
        800,
        False,
    )
    # 3 int8 values are 3 bytes, padded to 8 in the body and in the decoded size.
    three = pa.record_batch({"b": pa.array([1, 2, 3], pa.int8())})
    plain = layout_of(encode(three, "none"), three.schema, allow_zstd=False)
    assert (plain.body_len, plain.decoded_len) == (8, 8)
    assert layout_of(encode(three, "zstd"), three.schema, allow_zstd=True).decoded_len == 8


def test_a_file_without_messages_reads_back_empty_with_the_schema(tmp_path: Path) -> None:
    schema = mixed_table(1).schema
    path = tmp_path / "empty.arrow"
    with path.open("wb") as f:
        im.IpcMessageFileWriter(f, schema).close()
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))
    assert reader.num_record_batches == 0
    read = reader.read_all()
    assert read.num_rows == 0
    assert read.schema.equals(schema)
    assert feather.read_table(path).schema.equals(schema)


def test_footer_blocks_name_the_messages_in_their_order(tmp_path: Path) -> None:
    table = mixed_table(90)
    batches = table.to_batches(max_chunksize=30)
    assert len(batches) == 3
    messages = [encode(batch, "zstd") for batch in batches]
    layouts = [layout_of(m, table.schema, allow_zstd=True) for m in messages]

    with (tmp_path / "writer.arrow").open("wb") as f:
        writer = im.IpcMessageFileWriter(f, table.schema)
        for message, layout in zip(messages, layouts, strict=True):
            writer.write(message, layout)
        writer.close()
    reader = pa.ipc.open_file(pa.py_buffer((tmp_path / "writer.arrow").read_bytes()))
    assert reader.num_record_batches == 3
    for i, batch in enumerate(batches):
        assert reader.get_batch(i).equals(batch)

    # Stored in reverse order, the footer alone decides which batch is which.
    head = b"ARROW1\x00\x00" + table.schema.serialize().to_pybytes()
    stored = bytearray(head)
    blocks: dict[int, tuple[int, int, int]] = {}
    for i in reversed(range(3)):
        blocks[i] = (len(stored), layouts[i].metadata_len, layouts[i].body_len)
        stored += messages[i]
    footer = im.file_footer(table.schema, [blocks[i] for i in range(3)])
    assert footer.endswith(b"ARROW1")
    (footer_len,) = struct.unpack_from("<i", footer, len(footer) - 10)
    assert footer_len == len(footer) - 10
    stored += im.CONTINUATION + b"\x00" * 4 + footer
    reader = pa.ipc.open_file(pa.py_buffer(bytes(stored)))
    assert reader.num_record_batches == 3
    for i, batch in enumerate(batches):
        assert reader.get_batch(i).equals(batch)


# -- Decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_decode_returns_the_batch(compression: str) -> None:
    batch = mixed_table(50).to_batches()[0]
    message = encode(batch, compression)
    layout = layout_of(message, batch.schema, allow_zstd=True)
    decoded = im.RecordBatchMessage(message, layout, batch.schema, 3).decode()
    assert decoded.equals(batch)
    assert im.RecordBatchMessage(message, layout, batch.schema, 3).rows == 50


def test_corrupt_zstd_passes_the_layout_check_but_not_decode() -> None:
    batch = ints(100)
    message = bytearray(encode(batch, "zstd"))
    at = data_buffer_at(message)
    # The prefix is the decoded size of 100 int64 values; the zstd frame follows it.
    assert struct.unpack_from("<q", message, at) == (800,)
    assert message[at + 8 : at + 12] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    layout = layout_of(message, batch.schema, allow_zstd=True)
    assert im.RecordBatchMessage(bytes(message), layout, batch.schema, 5).decode().equals(batch)

    message[at + 8 : at + 12] = b"\x00\x11\x22\x33"
    layout = layout_of(message, batch.schema, allow_zstd=True)
    with pytest.raises(MalformedEnvelopeError, match="chunk 5 does not decode"):
        im.RecordBatchMessage(bytes(message), layout, batch.schema, 5).decode()


def test_decode_refuses_a_row_count_other_than_the_layout() -> None:
    batch = ints(10)
    message = encode(batch, "none")
    layout = dataclasses.replace(layout_of(message, batch.schema, allow_zstd=False), rows=11)
    with pytest.raises(MalformedEnvelopeError, match="chunk 2 decodes to a different row count"):
        im.RecordBatchMessage(message, layout, batch.schema, 2).decode()


def test_decode_refuses_a_buffer_too_short_for_its_rows() -> None:
    batch = ints(100)
    message = bytearray(encode(batch, "none"))
    descriptor, offset, length = buffer_descriptors(message)[1]
    assert (offset, length) == (0, 800)
    struct.pack_into("<qq", message, descriptor, 0, 400)
    layout = layout_of(message, batch.schema, allow_zstd=False)
    with pytest.raises(MalformedEnvelopeError, match="does not decode"):
        im.RecordBatchMessage(bytes(message), layout, batch.schema, 1).decode()


# -- Refusals ---------------------------------------------------------------------------


def _with_i32_at(message: bytes, pos: int, value: int) -> bytes:
    out = bytearray(message)
    struct.pack_into("<i", out, pos, value)
    return bytes(out)


PLAIN = encode(ints(100), "none")
ZSTD = encode(ints(100), "zstd")
INT_SCHEMA = ints().schema
FLATBUFFER_LEN = int(struct.unpack_from("<i", PLAIN, 4)[0])


@pytest.mark.parametrize(
    ("message", "match"),
    [
        pytest.param(b"\x00" * 4 + PLAIN[4:], "not an encapsulated Arrow IPC message", id="prefix"),
        pytest.param(PLAIN[4:], "not an encapsulated Arrow IPC message", id="legacy-no-prefix"),
        pytest.param(PLAIN[:7], "not an encapsulated Arrow IPC message", id="seven-bytes"),
        pytest.param(b"", "not an encapsulated Arrow IPC message", id="empty"),
        pytest.param(_with_i32_at(PLAIN, 4, 0), "metadata length 0 is invalid", id="meta-zero"),
        pytest.param(_with_i32_at(PLAIN, 4, -8), "metadata length -8 is invalid", id="meta-neg"),
        pytest.param(
            _with_i32_at(PLAIN, 4, 2**31 - 8), f"metadata length {2**31 - 8} is", id="meta-huge"
        ),
        pytest.param(
            _with_i32_at(PLAIN, 4, FLATBUFFER_LEN - 4),
            f"metadata length {FLATBUFFER_LEN - 4} is invalid",
            id="meta-unaligned",
        ),
        pytest.param(
            pa.schema({"n": pa.int64()}).serialize().to_pybytes(),
            "message type 1 is not a record batch",
            id="schema-message",
        ),
        pytest.param(PLAIN[:-8], "declares a 800-byte body but carries 792", id="truncated"),
        pytest.param(PLAIN + b"\x00" * 8, "declares a 800-byte body but carries 808", id="extra"),
    ],
)
def test_malformed_messages_are_refused(message: bytes, match: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=f"^chunk 7: {match}"):
        layout_of(message, INT_SCHEMA, allow_zstd=True)


def test_a_batch_of_another_schema_is_refused() -> None:
    wider = pa.record_batch({"n": pa.array([1, 2], pa.int64()), "m": pa.array(["a", "b"])})
    for compression in COMPRESSIONS:
        with pytest.raises(
            MalformedEnvelopeError,
            match=r"2 rows in 2 nodes and 5 buffers does not fit the schema \(1 nodes, 2 buffers\)",
        ):
            layout_of(encode(wider, compression), INT_SCHEMA, allow_zstd=True)
    # A null column adds a node but no buffer: the node count alone must refuse it.
    with_nulls = pa.schema({"z": pa.null(), "n": pa.int64()})
    assert im.BatchTemplate.of(with_nulls) == im.BatchTemplate(nodes=2, buffers=2, top_level=(0, 1))
    with pytest.raises(
        MalformedEnvelopeError,
        match=r"100 rows in 1 nodes and 2 buffers does not fit the schema \(2 nodes, 2 buffers\)",
    ):
        layout_of(PLAIN, with_nulls, allow_zstd=False)


def test_variadic_buffers_are_refused() -> None:
    # A string_view column has the node and buffer counts of a string column, plus a
    # variadic-count vector that a schema without view columns never has.
    views = pa.record_batch({"v": pa.array(["a", "bb", None], pa.string_view())})
    with pytest.raises(MalformedEnvelopeError, match="carries variadic buffers"):
        layout_of(encode(views, "none"), pa.schema({"v": pa.string()}), allow_zstd=False)


def test_zstd_is_refused_where_the_header_says_no_compression() -> None:
    with pytest.raises(
        MalformedEnvelopeError,
        match=r"body compression \(codec 1, method 0\) is not allowed by the header "
        r"\(no compression\)",
    ):
        layout_of(ZSTD, INT_SCHEMA, allow_zstd=False)


def test_lz4_is_refused_even_where_zstd_is_allowed() -> None:
    message = lz4_message(ints(100))
    # The premise: pyarrow reads it, so only the codec check can refuse it.
    assert pa.ipc.read_record_batch(pa.py_buffer(message), INT_SCHEMA).equals(ints(100))
    with pytest.raises(
        MalformedEnvelopeError,
        match=r"body compression \(codec 0, method 0\) is not allowed by the header "
        r"\(zstd buffers\)",
    ):
        layout_of(message, INT_SCHEMA, allow_zstd=True)


def _with_declared_size(size: int) -> bytes:
    message = bytearray(ZSTD)
    at = data_buffer_at(message)
    assert struct.unpack_from("<q", message, at) == (800,)
    struct.pack_into("<q", message, at, size)
    return bytes(message)


def test_a_decompression_bomb_is_refused_from_its_declared_size() -> None:
    # 2**40 bytes could not be allocated here: refusal proves nothing was decompressed.
    with pytest.raises(
        MalformedEnvelopeError,
        match=r"decodes to more than the \d+-byte limit \(checked before anything is decompressed",
    ):
        layout_of(_with_declared_size(2**40), INT_SCHEMA, allow_zstd=True)


def test_a_negative_declared_size_is_refused() -> None:
    with pytest.raises(MalformedEnvelopeError, match="buffer 1 declares a negative size"):
        layout_of(_with_declared_size(-2), INT_SCHEMA, allow_zstd=True)


def test_an_uncompressed_buffer_in_a_compressed_body_counts_its_own_length() -> None:
    # Size -1 marks a buffer stored as is: it decodes to its length minus the prefix.
    layout = layout_of(_with_declared_size(-1), INT_SCHEMA, allow_zstd=True)
    data_len = buffer_descriptors(ZSTD)[1][2]
    assert layout.decoded_len == data_len - 8 + (-(data_len - 8) % 8)


@pytest.mark.parametrize("message", [PLAIN, ZSTD], ids=COMPRESSIONS[::-1])
def test_the_decoded_size_limit_is_inclusive(
    message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded_len = layout_of(message, INT_SCHEMA, allow_zstd=True).decoded_len
    assert decoded_len == 800
    monkeypatch.setattr(im, "MAX_DECODED_LEN", decoded_len)
    assert layout_of(message, INT_SCHEMA, allow_zstd=True).decoded_len == decoded_len
    monkeypatch.setattr(im, "MAX_DECODED_LEN", decoded_len - 1)
    with pytest.raises(MalformedEnvelopeError, match="decodes to more than the 799-byte limit"):
        layout_of(message, INT_SCHEMA, allow_zstd=True)


def _patched(message: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(message)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def test_header_fields_out_of_range_are_refused() -> None:
    version_at = _field_pos(PLAIN, message_table(PLAIN), 0)
    rows_at = _field_pos(PLAIN, batch_table(PLAIN), 0)
    nodes_at, _ = vector(PLAIN, batch_table(PLAIN), 1)
    data_descriptor = buffer_descriptors(PLAIN)[1][0]
    zstd_data_descriptor = buffer_descriptors(ZSTD)[1][0]
    cases = [
        (_patched(PLAIN, version_at, "<h", 3), "Arrow metadata version 3, expected V5"),
        (_patched(PLAIN, rows_at, "<q", -1), "declares -1 rows"),
        (_patched(PLAIN, rows_at, "<q", im.MAX_CHUNK_ROWS + 1), "a chunk holds 0 to"),
        (_patched(PLAIN, rows_at, "<q", 1000), "column node 0 has 100 rows, the batch says 1000"),
        (_patched(PLAIN, nodes_at, "<q", -1), "field node 0 has invalid counts"),
        (_patched(PLAIN, nodes_at + 8, "<q", 101), "field node 0 has invalid counts"),
        (_patched(PLAIN, data_descriptor, "<q", 8), "buffer 1 lies outside the message body"),
        (_patched(PLAIN, data_descriptor, "<q", -8), "buffer 1 lies outside the message body"),
        (_patched(PLAIN, data_descriptor + 8, "<q", 808), "buffer 1 lies outside"),
        (_patched(ZSTD, zstd_data_descriptor + 8, "<q", 7), "compressed buffer 1 has no size"),
    ]
    for message, match in cases:
        with pytest.raises(MalformedEnvelopeError, match=match):
            layout_of(message, INT_SCHEMA, allow_zstd=True)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_body_length_off_the_8_byte_grid_is_refused(compression: str) -> None:
    message = bytearray(encode(ints(100), compression))
    body_len_at = _field_pos(message, message_table(message), 3)
    (body_len,) = struct.unpack_from("<q", message, body_len_at)
    struct.pack_into("<q", message, body_len_at, body_len + 4)
    message += b"\x00" * 4
    with pytest.raises(MalformedEnvelopeError, match="not a multiple of 8"):
        layout_of(message, INT_SCHEMA, allow_zstd=True)


@pytest.mark.parametrize(
    "column",
    [pa.string_view(), pa.binary_view(), pa.struct([("v", pa.string_view())])],
    ids=["string_view", "binary_view", "nested"],
)
def test_templates_refuse_view_columns(column: pa.DataType) -> None:
    with pytest.raises(MalformedEnvelopeError, match="'v' is or holds a view type"):
        im.BatchTemplate.of(pa.schema({"n": pa.int64(), "v": column}))


def test_template_counts_nodes_and_buffers() -> None:
    schema = pa.schema({"n": pa.int64(), "s": pa.string(), "l": pa.list_(pa.int32())})
    # int64: validity, data; string: validity, offsets, data; list: validity, offsets + child.
    assert im.BatchTemplate.of(schema) == im.BatchTemplate(nodes=4, buffers=9, top_level=(0, 1, 2))


# -- Robustness -------------------------------------------------------------------------

FUZZ_BATCH = mixed_table(40).to_batches()[0]
FUZZ_TEMPLATE = im.BatchTemplate.of(FUZZ_BATCH.schema)
FUZZ_MESSAGES = {c: encode(FUZZ_BATCH, c) for c in COMPRESSIONS}


@settings(max_examples=300, deadline=None)
@given(
    compression=st.sampled_from(COMPRESSIONS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=3),
    keep=st.floats(0, 1) | st.just(1.0),
)
def test_mutated_messages_are_checked_or_refused_never_crash(
    compression: str, edits: list[tuple[float, int]], keep: float
) -> None:
    original = FUZZ_MESSAGES[compression]
    message = bytearray(original)
    for where, value in edits:
        message[int(where * len(message))] = value
    del message[int(keep * len(message)) :]
    try:
        layout = im.read_batch_layout(message, FUZZ_TEMPLATE, allow_zstd=True, what="chunk")
    except MalformedEnvelopeError:
        return
    assert isinstance(layout, im.BatchLayout)
    assert layout.metadata_len + layout.body_len == len(message)
    assert 0 <= layout.decoded_len <= im.MAX_DECODED_LEN


def test_a_buffer_off_the_8_byte_grid_is_refused() -> None:
    # An unaligned buffer would be written to the file as is, and no reader opens it.
    schema = pa.schema({"s": pa.string()})
    message = bytearray(encode(pa.record_batch({"s": ["ab", "cd", "ef"]}), "none"))
    descriptor, offset, length = buffer_descriptors(bytes(message))[2]
    assert offset % 8 == 0 and length > 4
    struct.pack_into("<qq", message, descriptor, offset + 4, length - 4)
    with pytest.raises(MalformedEnvelopeError, match="buffer 2 is not 8-byte aligned"):
        layout_of(bytes(message), schema, allow_zstd=False)


def test_a_misaligned_flatbuffer_is_refused_by_arrows_verifier() -> None:
    # Every relative offset still holds when the whole flatbuffer moves by one
    # byte, but Arrow's reader refuses unaligned tables.
    flatbuffer_len = int(struct.unpack_from("<i", PLAIN, 4)[0])
    flatbuffer, body = PLAIN[8 : 8 + flatbuffer_len], PLAIN[8 + flatbuffer_len :]
    root = int(struct.unpack_from("<I", flatbuffer, 0)[0])
    shifted = struct.pack("<I", root + 1) + b"\x00" + flatbuffer[4:]
    shifted += bytes(-len(shifted) % 8)
    message = im.CONTINUATION + struct.pack("<i", len(shifted)) + shifted + body
    with pytest.raises(MalformedEnvelopeError, match="Arrow rejects the message metadata"):
        layout_of(message, INT_SCHEMA, allow_zstd=False)


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (pa.list_(pa.dictionary(pa.int8(), pa.string())), "holds a dictionary type"),
        (pa.dense_union([pa.field("x", pa.int8())]), "holds a union type"),
        (pa.struct([("v", pa.binary_view())]), "holds a view type"),
    ],
    ids=["nested-dictionary", "union", "nested-view"],
)
def test_templates_refuse_what_a_file_could_not_hold(column: pa.DataType, match: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=match):
        im.BatchTemplate.of(pa.schema({"n": pa.int64(), "c": column}))
    with pytest.raises(MalformedEnvelopeError, match="no columns"):
        im.BatchTemplate.of(pa.schema([]))


def test_templates_know_which_nodes_are_columns() -> None:
    schema = pa.schema(
        {
            "m": pa.map_(pa.string(), pa.int32()),
            "s": pa.struct([("x", pa.list_(pa.int8())), ("y", pa.string())]),
            "i": pa.int8(),
        }
    )
    # map: itself, entries struct, key, value; struct: itself, list x, its item, y.
    assert im.BatchTemplate.of(schema).top_level == (0, 4, 8)


def test_a_footer_for_many_blocks_stays_small(tmp_path: Path) -> None:
    # 24 bytes a block, whatever the schema's width: no file of empty batches is built.
    schema = pa.schema([(f"c{i}", pa.string()) for i in range(50)])
    blocks = [(8 * i, 8, 0) for i in range(20_000)]
    footer = im.file_footer(schema, blocks)
    assert 20_000 * 24 < len(footer) < 20_000 * 24 + 64 * 1024
    assert footer.endswith(b"ARROW1")


class ShortWrites(io.RawIOBase):
    """A raw file that takes at most 7 bytes a call, as a nearly full disk may."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        taken = bytes(memoryview(b)[:7])
        self.data += taken
        return len(taken)


def test_short_writes_are_completed() -> None:
    batch = ints(100)
    sink = ShortWrites()
    writer = im.IpcMessageFileWriter(sink, batch.schema)  # type: ignore[arg-type]
    message = encode(batch, "zstd")
    writer.write(message, layout_of(message, batch.schema, allow_zstd=True))
    writer.close()
    assert (
        pa.ipc.open_file(pa.py_buffer(bytes(sink.data)))
        .read_all()
        .equals(pa.Table.from_batches([batch]))
    )


# -- Element bound: nested nodes cannot declare more than a chunk window --------------


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (pa.large_list(pa.null()), "column 'c' holds a null type below the top level"),
        (pa.list_(pa.null(), 2), "column 'c' holds a null type below the top level"),
        (pa.list_(pa.null(), 2**31 - 1), "fixed-size list of 2147483647 items"),
        (pa.struct([("z", pa.null())]), "column 'c' holds a null type below the top level"),
        (pa.map_(pa.string(), pa.null()), "column 'c' holds a null type below the top level"),
        (
            pa.list_(pa.list_(pa.int8(), im.MAX_CHUNK_ELEMENTS + 1)),
            f"fixed-size list of {im.MAX_CHUNK_ELEMENTS + 1} items, above the",
        ),
    ],
    ids=[
        "large-list-null",
        "fixed-size-list-null",
        "huge-fixed-size-list-null",
        "struct-null",
        "map-null",
        "huge-list-size",
    ],
)
def test_templates_refuse_columns_whose_elements_cost_no_bytes(
    column: pa.DataType, match: str
) -> None:
    with pytest.raises(MalformedEnvelopeError, match=match):
        im.BatchTemplate.of(pa.schema({"n": pa.int64(), "c": column}))


def test_a_top_level_null_column_and_a_fixed_size_list_within_bounds_are_carried() -> None:
    schema = pa.schema({"z": pa.null(), "f": pa.list_(pa.int8(), im.MAX_CHUNK_ELEMENTS)})
    assert im.unsupported_type(schema) is None


LISTS = pa.record_batch({"l": pa.array([[1, 2, 3], [4], [], [5, 6]], pa.list_(pa.int8()))})


def _node_lengths_at(message: bytes) -> list[int]:
    start, count = vector(message, batch_table(message), 1)
    return [start + 16 * i for i in range(count)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_nested_node_declaring_more_elements_than_a_chunk_holds_is_refused(
    compression: str,
) -> None:
    # A child's length is not tied to the rows; nothing but the element bound
    # stops a tiny message from declaring billions of items for a reader to build.
    message = encode(LISTS, compression)
    _, child = _node_lengths_at(message)
    assert struct.unpack_from("<q", message, child)[0] == 6
    bomb = _patched(message, child, "<q", 2**40)
    with pytest.raises(MalformedEnvelopeError, match=r"hold \d+ elements; a chunk holds at most"):
        layout_of(bomb, LISTS.schema, allow_zstd=True)
    just_over = _patched(message, child, "<q", im.MAX_CHUNK_ELEMENTS - 4 + 1)
    with pytest.raises(MalformedEnvelopeError, match=f"{im.MAX_CHUNK_ELEMENTS + 1} elements"):
        layout_of(just_over, LISTS.schema, allow_zstd=True)


def test_the_element_bound_is_inclusive_and_counts_every_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = encode(LISTS, "none")
    layout = layout_of(message, LISTS.schema, allow_zstd=False)
    assert layout.elements == 4 + 6 == im.message_elements(message)
    monkeypatch.setattr(im, "MAX_CHUNK_ELEMENTS", 10)
    assert layout_of(message, LISTS.schema, allow_zstd=False).elements == 10
    monkeypatch.setattr(im, "MAX_CHUNK_ELEMENTS", 9)
    with pytest.raises(MalformedEnvelopeError, match="hold 10 elements; a chunk holds at most 9"):
        layout_of(message, LISTS.schema, allow_zstd=False)
