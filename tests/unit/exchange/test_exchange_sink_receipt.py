"""Atomic output and signed receipts."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.feather
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.cli.exit_codes import code_for
from node.errors import ExchangeError, OutputError
from node.exchange import sink as sink_module
from node.exchange.envelope import MessageEncoder
from node.exchange.errors import MalformedEnvelopeError, ReceiptError
from node.exchange.ipc_message import (
    BatchTemplate,
    IpcMessageFileWriter,
    RecordBatchMessage,
    read_batch_layout,
)
from node.exchange.receipt import make_receipt, verify_receipt
from node.exchange.sink import AtomicTableSink, output_format
from node.identity.keys import ed25519_public_raw
from node.output_path import check_output

BATCH = pa.record_batch({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def message_of(batch: pa.RecordBatch, compression: str = "none") -> RecordBatchMessage:
    """``batch`` as the opener hands it to the sink: encoded as sent, then checked."""
    data = MessageEncoder(compression)(batch).to_pybytes()
    layout = read_batch_layout(
        data, BatchTemplate.of(batch.schema), allow_zstd=compression == "zstd", what="test"
    )
    return RecordBatchMessage(data, layout, batch.schema, 0)


def test_zstd_messages_land_compressed_in_arrow_and_decoded_in_parquet(tmp_path: Path) -> None:
    batch = pa.record_batch({"n": pa.array(range(50_000), pa.int64()), "s": ["same text"] * 50_000})
    written = {}
    for compression in ("none", "zstd"):
        for fmt in ("arrow", "parquet"):
            dest = tmp_path / f"{compression}.{fmt}"
            with AtomicTableSink(dest, batch.schema, fmt) as sink:
                sink.write(message_of(batch, compression))
                sink.write(message_of(batch, compression))
                sink.commit()
            read = pq.read_table(dest) if fmt == "parquet" else pa.feather.read_table(dest)
            assert read.equals(pa.Table.from_batches([batch, batch]))
            written[compression, fmt] = dest.stat().st_size
    # The Arrow file keeps the buffers as they travelled: zstd on disk, nothing re-encoded.
    assert written["zstd", "arrow"] * 5 < written["none", "arrow"]


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_commit_makes_the_file_appear_complete(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / f"out.{fmt}"
    with AtomicTableSink(dest, BATCH.schema, fmt) as sink:
        sink.write(message_of(BATCH))
        sink.write(message_of(BATCH))
        assert not dest.exists()
        sink.commit()
    table = pq.read_table(dest) if fmt == "parquet" else pa.ipc.open_file(dest).read_all()
    assert table.num_rows == 6
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_corrupt_content_fails_validated_and_parquet_outputs_only(tmp_path: Path) -> None:
    batch = pa.record_batch({"n": pa.array(range(1000), pa.int64())})
    good = message_of(batch, "zstd")
    body_at = len(good.data) - good.layout.body_len
    corrupt = bytearray(good.data)
    corrupt[body_at + 8 : body_at + 12] = b"\x00" * 4  # the zstd frame magic of the data buffer
    bad = RecordBatchMessage(bytes(corrupt), good.layout, batch.schema, 7)
    for fmt, validate in (("arrow", True), ("parquet", False)):
        dest = tmp_path / f"out.{fmt}"
        with AtomicTableSink(dest, batch.schema, fmt, validate=validate) as sink:
            sink.write(good)
            with pytest.raises(MalformedEnvelopeError, match="chunk 7 does not decode"):
                sink.write(bad)
        assert list(tmp_path.iterdir()) == []
    # Unvalidated Arrow output stores the message as signed; its reader meets the corruption.
    dest = tmp_path / "raw.arrow"
    with AtomicTableSink(dest, batch.schema, "arrow") as sink:
        sink.write(bad)
        sink.commit()
    with pytest.raises(OSError, match="ZSTD decompression failed"):
        pa.ipc.open_file(dest).read_all()


def test_failure_leaves_nothing_visible(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), AtomicTableSink(dest, BATCH.schema, "parquet") as sink:
        sink.write(message_of(BATCH))
        raise RuntimeError("stream broke")
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_output_and_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists"):
        AtomicTableSink(tmp_path / "x.parquet", BATCH.schema, "parquet")
    assert (tmp_path / "x.parquet").read_bytes() == b"keep"
    with pytest.raises(OutputError, match="does not exist"):
        AtomicTableSink(tmp_path / "no" / "x.parquet", BATCH.schema, "parquet")


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [("a.parquet", None, "parquet"), ("a.arrow", None, "arrow"), ("a.bin", "arrow", "arrow")],
)
def test_output_format(name: str, explicit: str | None, expected: str) -> None:
    assert output_format(Path(name), explicit) == expected


def test_output_format_refuses_unknown() -> None:
    # A usage mistake (exit 2), not an exchange failure.
    with pytest.raises(OutputError, match="cannot tell the output format"):
        output_format(Path("a.txt"))
    with pytest.raises(OutputError, match="unknown output format"):
        output_format(Path("a.txt"), "csv")


KEY = ed25519.Ed25519PrivateKey.generate()
FIELDS = {
    "share_id": bytes(16),
    "digest": "sha256:" + "ab" * 32,
    "rows": 3,
    "chunks": 1,
    "sender": "health",
    "recipient": "statistics",
    "agreement": "agr-1",
}


def _fields(**changes: object) -> dict[str, object]:
    """Receipt fields dated now: a time taken when the module loads goes stale in a long run."""
    return {**FIELDS, "time": int(time.time()), **changes}


def test_receipt_round_trip() -> None:
    receipt = make_receipt(KEY, **_fields())  # type: ignore[arg-type]
    verify_receipt(receipt, ed25519_public_raw(KEY), {"share_id": "00" * 16, "rows": 3})


@pytest.mark.parametrize("offset", [-3600, 3600, 4_000_000_000])
def test_a_receipt_dated_far_from_the_providers_clock_is_refused(offset: int) -> None:
    receipt = make_receipt(KEY, **_fields(time=int(time.time()) + offset))  # type: ignore[arg-type]
    with pytest.raises(ReceiptError, match="from this node's clock"):
        verify_receipt(receipt, ed25519_public_raw(KEY), {})


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r["receipt"].__setitem__("rows", 4), "does not verify"),
        (lambda r: r.__setitem__("signature", "!!"), "not base64"),
        (lambda r: r["receipt"].pop("digest"), "exactly the fields"),
        (lambda r: r["receipt"].__setitem__("rows", "3"), "must be int"),
        (lambda r: r.__setitem__("extra", 1), "exactly 'receipt' and 'signature'"),
    ],
)
def test_receipt_refusals(mutate: object, match: str) -> None:
    receipt = make_receipt(KEY, **_fields())  # type: ignore[arg-type]
    mutate(receipt)  # type: ignore[operator]
    with pytest.raises(ReceiptError, match=match):
        verify_receipt(receipt, ed25519_public_raw(KEY), {})


def test_receipt_field_mismatch_and_wrong_key() -> None:
    receipt = make_receipt(KEY, **_fields())  # type: ignore[arg-type]
    with pytest.raises(ReceiptError, match="digest is"):
        verify_receipt(receipt, ed25519_public_raw(KEY), {"digest": "sha256:00"})
    other = ed25519_public_raw(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(receipt, other, {})


def test_receipt_refusals_quote_oversized_fields_briefly() -> None:
    huge = "x" * 1_000_000
    receipt = make_receipt(KEY, **_fields(digest=huge, recipient=huge))  # type: ignore[arg-type]
    with pytest.raises(ReceiptError, match=r"digest is 'x+\.\.\. \(1000002 char") as mismatch:
        verify_receipt(receipt, ed25519_public_raw(KEY), {"digest": "sha256:00"})
    other = ed25519_public_raw(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptError, match="does not verify under") as unsigned:
        verify_receipt(receipt, other, {})
    assert len(str(mismatch.value)) < 200 and len(str(unsigned.value)) < 200


def test_partials_of_crashed_writers_are_removed(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    stale = tmp_path / ".out.parquet.2147483646.x1.partial"
    live = tmp_path / f".out.parquet.{os.getpid()}.x2.partial"
    other = tmp_path / ".other.parquet.2147483646.x3.partial"
    for path in (stale, live, other):
        path.write_bytes(b"half")
    with AtomicTableSink(dest, BATCH.schema, "parquet") as sink:
        sink.write(message_of(BATCH))
        sink.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, live.name, other.name])


def test_written_bytes_are_flushed_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.exchange.sink as sink_module

    flushed: list[tuple[Path, bool]] = []
    real = sink_module._fsync_path

    def counting(path: Path, flags: int = os.O_RDONLY, *, datasync: bool = False) -> None:
        flushed.append((path, datasync))
        real(path, flags, datasync=datasync)

    monkeypatch.setattr(sink_module, "FLUSH_EVERY", 1000)
    monkeypatch.setattr(sink_module, "_fsync_path", counting)
    batch = pa.record_batch({"x": list(range(1000))})  # 8000 bytes per write
    dest = tmp_path / "out.arrow"
    sink = AtomicTableSink(dest, batch.schema, "arrow")
    for _ in range(5):
        sink.write(message_of(batch))
    sink._settle_flush()
    background = [p for p, datasync in flushed if datasync]
    assert background and all(p == sink.tmp for p in background)
    assert not dest.exists()  # flushing never publishes the file
    sink.commit()
    assert pa.ipc.open_file(dest).read_all().num_rows == 5000
    assert (dest, False) not in flushed and (sink.tmp, False) in flushed


def test_a_failed_background_flush_fails_the_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.exchange.sink as sink_module

    def failing(path: Path, flags: int = os.O_RDONLY, *, datasync: bool = False) -> None:
        if datasync:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sink_module, "FLUSH_EVERY", 1000)
    monkeypatch.setattr(sink_module, "_fsync_path", failing)
    batch = pa.record_batch({"x": list(range(1000))})
    dest = tmp_path / "out.arrow"
    sink = AtomicTableSink(dest, batch.schema, "arrow")
    sink.write(message_of(batch))  # starts a flush, which fails in the background
    with pytest.raises(ExchangeError, match="Input/output error"):
        for _ in range(3):
            sink.write(message_of(batch))
        sink.commit()
    sink.abort()
    assert not dest.exists() and not sink.tmp.exists()


def test_unusable_output_paths_are_refused_as_output_errors(tmp_path: Path) -> None:
    (tmp_path / "taken.parquet").write_bytes(b"x")
    cases = [
        (tmp_path / "taken.parquet", "already exists"),
        (tmp_path / "missing" / "x.parquet", "does not exist"),
        (tmp_path, "is a directory"),
    ]
    for dest, match in cases:
        with pytest.raises(OutputError, match=match) as refused:
            check_output(dest)
        # A bad --out is the operator's to fix: exit code 2, not a peer failure (5).
        assert code_for(refused.value) == 2
    check_output(tmp_path / "taken.parquet", overwrite=True)
    check_output(tmp_path / "new.arrow")


# -- Memory of long shares: row groups and footer blocks do not grow per chunk ------------


def _tiny_chunks(count: int, columns: int = 20) -> tuple[pa.Schema, list[RecordBatchMessage]]:
    """``count`` one-row chunks of ``columns`` columns, as a hostile sender may split a share."""
    batches = [
        pa.record_batch({f"c{c}": pa.array([i * columns + c], pa.int32()) for c in range(columns)})
        for i in range(count)
    ]
    return batches[0].schema, [message_of(b) for b in batches]


def _write_parquet(dest: Path, schema: pa.Schema, messages: list[RecordBatchMessage]) -> None:
    with AtomicTableSink(dest, schema, "parquet") as sink:
        for message in messages:
            sink.write(message)
        sink.commit()


def test_parquet_row_groups_collect_small_chunks(tmp_path: Path) -> None:
    schema, messages = _tiny_chunks(1000)
    dest = tmp_path / "out.parquet"
    _write_parquet(dest, schema, messages)
    assert pq.ParquetFile(dest).metadata.num_row_groups == 1
    table = pq.read_table(dest)
    assert table.num_rows == 1000 and table["c3"][999].as_py() == 999 * 20 + 3


@pytest.mark.parametrize(
    ("bound", "value", "row_groups"),
    [
        ("ROW_GROUP_ROWS", 100, range(10, 11)),
        ("ROW_GROUP_ELEMENTS", 20 * 250, range(4, 5)),
        # Held batches are merged every few dozen, which shrinks what they hold.
        ("ROW_GROUP_BYTES", 64 * 1024, range(5, 50)),
    ],
)
def test_parquet_row_groups_end_at_each_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str, value: int, row_groups: range
) -> None:
    monkeypatch.setattr(sink_module, bound, value)
    schema, messages = _tiny_chunks(1000)
    dest = tmp_path / "out.parquet"
    _write_parquet(dest, schema, messages)
    assert pq.ParquetFile(dest).metadata.num_row_groups in row_groups
    assert pq.read_table(dest).equals(pa.Table.from_batches([m.decode() for m in messages]))


def test_an_aborted_parquet_output_writes_no_row_group(tmp_path: Path) -> None:
    schema, messages = _tiny_chunks(10)
    dest = tmp_path / "out.parquet"
    with AtomicTableSink(dest, schema, "parquet") as sink:
        for message in messages:
            sink.write(message)
        sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_arrow_output_keeps_24_bytes_per_chunk_until_its_footer(tmp_path: Path) -> None:
    schema, messages = _tiny_chunks(1, columns=1)
    count = 20_000
    with Path(os.devnull).open("wb", buffering=0) as devnull:
        writer = IpcMessageFileWriter(devnull, schema)
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for _ in range(count):
                writer.write(messages[0].data, messages[0].layout)
            grown = sum(
                s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")
            )
        finally:
            tracemalloc.stop()
        writer.close()
    assert grown < 32 * count, f"{grown / count:.0f} bytes per chunk"
