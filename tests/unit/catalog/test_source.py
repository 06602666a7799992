"""Bounded-memory batch reading of catalogued datasets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from node.catalog import source
from node.catalog.source import read_batches


def table(rows: int, start: int = 0) -> pa.Table:
    ids = pa.array(range(start, start + rows), pa.int64())
    return pa.table(
        {
            "id": ids,
            "district": pa.array([f"d{i % 9}" for i in range(start, start + rows)]),
            "score": pa.array([i / 4 for i in range(start, start + rows)], pa.float64()),
        }
    )


def read(dataset: ds.Dataset, columns: list[str], rows: int = 1000) -> pa.Table:
    batches = list(read_batches(dataset, columns, rows))
    assert all(b.num_rows <= rows for b in batches)
    return pa.Table.from_batches(batches, schema=batches[0].schema if batches else None)


def test_parquet_directory_reads_only_the_columns_asked_in_file_order(tmp_path: Path) -> None:
    for i in range(3):
        pq.write_table(table(2500, i * 2500), tmp_path / f"part-{i}.parquet", row_group_size=700)
    got = read(ds.dataset(tmp_path, format="parquet"), ["score", "id"])
    assert got.column_names == ["score", "id"]
    assert got.column("id").to_pylist() == list(range(7500))


def test_files_are_cast_to_the_dataset_schema(tmp_path: Path) -> None:
    # The dataset's schema comes from the first file; a later file stores id as int32.
    pq.write_table(table(10), tmp_path / "a.parquet")
    narrow = table(10, 10).set_column(0, "id", pa.array(range(10, 20), pa.int32()))
    pq.write_table(narrow, tmp_path / "b.parquet")
    dataset = ds.dataset(tmp_path, format="parquet")
    batches = list(read_batches(dataset, ["id", "district"], 100))
    assert all(b.schema.field("id").type == pa.int64() for b in batches)
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(20))


def test_a_file_missing_a_column_is_filled_with_nulls_like_the_scanner(tmp_path: Path) -> None:
    pq.write_table(table(5), tmp_path / "a.parquet")
    pq.write_table(table(3, 5).drop_columns(["score"]), tmp_path / "b.parquet")
    got = read(ds.dataset(tmp_path, format="parquet"), ["id", "score"])
    assert got.column("id").to_pylist() == list(range(8))
    assert got.column("score").to_pylist()[5:] == [None, None, None]


def test_csv_and_arrow_ipc_go_through_the_scanner(tmp_path: Path) -> None:
    data = table(1234)
    pacsv.write_csv(data, tmp_path / "t.csv")
    with pa.ipc.new_file(tmp_path / "t.arrow", data.schema) as writer:
        writer.write_table(data)
    for path, fmt in ((tmp_path / "t.csv", "csv"), (tmp_path / "t.arrow", "ipc")):
        got = read(ds.dataset(path, format=fmt), ["district", "id"], rows=500)
        assert got.select(["district", "id"]).equals(data.select(["district", "id"]))


def test_memory_stays_at_a_few_row_groups_behind_a_slow_consumer(tmp_path: Path) -> None:
    # 96 row groups of about 0.9 MB; the consumer is slower than the disk, as a share is.
    path = tmp_path / "big.parquet"
    with pq.ParquetWriter(path, table(1).schema, compression="none") as writer:
        for i in range(12):
            writer.write_table(table(64_000, i * 64_000), row_group_size=8_000)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, pa.total_allocated_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    base = pa.total_allocated_bytes()
    rows = 0
    try:
        for batch in read_batches(ds.dataset(path, format="parquet"), ["id", "district"], 8_000):
            rows += batch.num_rows
            time.sleep(0.002)
    finally:
        done.set()
        sampler.join()
    assert rows == 768_000
    # The file decodes to about 18 MB; a read-ahead of the whole file would show here.
    assert peak - base < 8 * 2**20


def peak_while_reading(dataset: ds.Dataset, columns: list[str], rows: int) -> tuple[int, int]:
    """The most Arrow memory held above the start while reading, and the rows read."""
    base = peak = pa.total_allocated_bytes()
    read_rows = 0
    for batch in read_batches(dataset, columns, rows):
        read_rows += batch.num_rows
        peak = max(peak, pa.total_allocated_bytes())
    return peak - base, read_rows


def test_one_huge_row_group_is_read_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writers that put a whole table in one row group are common; its column
    # chunk must not be loaded whole. Row groups above the limit (64 MiB; 4 MiB
    # here, to keep the test small) are read a page at a time.
    monkeypatch.setattr(source, "_UNBUFFERED_ROW_GROUP", 4 << 20)
    path = tmp_path / "one-group.parquet"
    rows = 3_000_000
    ids = pa.table({"id": pa.array(np.arange(rows, dtype=np.int64))})
    pq.write_table(ids, path, row_group_size=rows, compression="none")
    held, read_rows = peak_while_reading(ds.dataset(path, format="parquet"), ["id"], 64_000)
    assert read_rows == rows
    assert held < 8 * 2**20


def test_one_huge_arrow_record_batch_is_read_in_slices(tmp_path: Path) -> None:
    path = tmp_path / "one-batch.arrow"
    rows = 3_000_000
    data = pa.table({"id": pa.array(np.arange(rows, dtype=np.int64)), "other": pa.nulls(rows)})
    with pa.ipc.new_file(path, data.schema) as writer:
        writer.write_table(data)  # a single record batch of 24 MB
    del data
    dataset = ds.dataset(path, format="ipc")
    held, read_rows = peak_while_reading(dataset, ["id"], 64_000)
    assert read_rows == rows
    assert held < 8 * 2**20
    batches = list(read_batches(dataset, ["id"], 1_000_000))
    assert [b.num_rows for b in batches] == [1_000_000] * 3
    assert batches[0].schema == pa.schema({"id": pa.int64()})
    assert batches[-1].column(0)[-1].as_py() == rows - 1
