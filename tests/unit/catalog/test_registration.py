"""Registration reads the whole dataset; status notices missing or changed files;
``replace`` keeps reviewed labels and the description."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from node.catalog.registry import Catalog, SchemaChanges
from node.catalog.verify import ReadProgress, _conversion_error
from node.errors import CatalogError

# Arrow infers a CSV's column types from its first block (1 MiB), so the bad
# value must sit well past it to be invisible to inference and row counting.
DEEP_ROWS = 150_000
BAD_ROW = 120_000


def _deep_csv(path: Path, bad: str | None = "unknown") -> Path:
    with path.open("w") as f:
        f.write("person_id,age,district\n")
        for i in range(1, DEEP_ROWS + 1):
            age = bad if (i == BAD_ROW and bad is not None) else str(i % 90)
            f.write(f"p{i},{age},d{i % 7}\n")
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.db")


def test_a_bad_value_deep_in_a_csv_is_refused_naming_column_line_and_value(
    tmp_path: Path, catalog: Catalog
) -> None:
    deep = _deep_csv(tmp_path / "deep.csv")
    # Counting alone (what registration used to do) sees nothing wrong.
    assert ds.dataset(deep, format="csv").count_rows() == DEEP_ROWS
    with pytest.raises(CatalogError, match=r"column 'age' of deep\.csv holds 'unknown'") as e:
        catalog.add("deep", deep)
    assert f"line {BAD_ROW + 1}" in str(e.value) and "data row 120,000" in str(e.value)
    assert "int64" in str(e.value) and "age" in (e.value.hint or "")
    assert catalog.list() == []


def test_a_failed_replace_keeps_the_old_registration(tmp_path: Path, catalog: Catalog) -> None:
    good = _deep_csv(tmp_path / "good.csv", bad=None)
    before = catalog.add("deep", good, labels={"district": "public"}, description="kept")
    with pytest.raises(CatalogError, match="holds 'unknown'"):
        catalog.add("deep", _deep_csv(tmp_path / "deep.csv"), replace=True)
    assert catalog.get("deep") == before
    assert catalog.status(before).state == "ok"


def _line_ends(path: Path) -> list[int]:
    """Bytes up to the end of the header (index 0) and of every data row (index N)."""
    ends, total = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        total += len(line)
        ends.append(total)
    return ends


def test_registration_reports_progress_and_counts_every_row(
    tmp_path: Path, catalog: Catalog
) -> None:
    good = _deep_csv(tmp_path / "good.csv", bad=None)
    seen: list[ReadProgress] = []
    info = catalog.add("deep", good, on_progress=seen.append)
    size = good.stat().st_size
    assert info.rows == DEEP_ROWS and seen[-1] == ReadProgress(DEEP_ROWS, size, size)
    assert len(seen) > 2  # reported while reading, not only at the end
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)
    assert [p.bytes_read for p in seen] == sorted(p.bytes_read for p in seen)
    # Bytes reported are those of the rows converted so far, to within one line.
    ends = _line_ends(good)
    longest = max(b - a for a, b in itertools.pairwise(ends))
    for progress in seen:
        assert abs(progress.bytes_read - ends[progress.rows]) <= longest, progress


def test_progress_of_tiny_rows_stays_within_one_line(tmp_path: Path, catalog: Catalog) -> None:
    # Two bytes a row: a reader block holds more rows than a share's batch, and
    # a block split into batches must not be counted as several blocks.
    path = tmp_path / "tiny.csv"
    path.write_text("n\n" + "7\n" * 1_200_000)
    seen: list[ReadProgress] = []
    assert catalog.add("tiny", path, on_progress=seen.append).rows == 1_200_000
    ends = _line_ends(path)
    assert all(abs(p.bytes_read - ends[p.rows]) <= 2 for p in seen), seen


def test_progress_of_a_directory_counts_every_file(tmp_path: Path, catalog: Catalog) -> None:
    data = tmp_path / "dir"
    data.mkdir()
    # One file has the dataset's types (counted from metadata), one is read in full.
    pq.write_table(pa.table({"age": pa.array(range(300_000), pa.int64())}), data / "a.parquet")
    pq.write_table(
        pa.table({"age": pa.array(range(600_000), pa.int32())}),
        data / "b.parquet",
        row_group_size=100_000,
    )
    total = sum(f.stat().st_size for f in data.iterdir())
    seen: list[ReadProgress] = []
    assert catalog.add("mixed", data, on_progress=seen.append).rows == 900_000
    assert all(p.bytes_total == total for p in seen)
    read = [p.bytes_read for p in seen]
    assert read == sorted(read) and read[-1] == total
    # b.parquet is read in batches, each reported with its share of the file.
    assert len({p.bytes_read for p in seen if 0 < p.bytes_read < total}) >= 2


def test_a_parquet_directory_with_an_unconvertible_file_is_refused(
    tmp_path: Path, catalog: Catalog
) -> None:
    data = tmp_path / "dir"
    data.mkdir()
    pq.write_table(pa.table({"age": pa.array([1, 2], pa.int64())}), data / "a.parquet")
    pq.write_table(pa.table({"age": pa.array([3], pa.int32())}), data / "b.parquet")
    # A file of another but convertible type is read in full and accepted.
    assert catalog.add("mixed", data).rows == 3
    pq.write_table(pa.table({"age": ["x"]}), data / "c.parquet")
    with pytest.raises(CatalogError, match=r"cannot read c\.parquet as registered"):
        catalog.add("bad", data)
    assert [d.name for d in catalog.list()] == ["mixed"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "In CSV column #0: CSV conversion error to double: invalid value 'n/a'",
            r"column 'a' of f\.csv holds 'n/a' at a row, which is not double",
        ),
        (
            "In CSV column #1: Row #7: CSV conversion error to int64: invalid value '"
            + "9" * 100
            + "'",
            r"column 'b' of f\.csv holds '9{60}\.\.\.' at line 7 \(data row 6\)",
        ),
        (
            "In CSV column #5: Row #2: CSV conversion error to int64: invalid value 'x'",
            r"column '#6' of f\.csv",
        ),
        ("CSV parse error: Expected 2 columns, got 3", r"cannot read f\.csv as registered"),
    ],
)
def test_conversion_errors_are_explained(message: str, expected: str) -> None:
    schema = pa.schema([("a", pa.float64()), ("b", pa.int64())])
    error = _conversion_error(pa.ArrowInvalid(message), schema, "f.csv")
    with pytest.raises(CatalogError, match=expected):
        raise error
    assert error.hint


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_status_tells_missing_modified_and_schema_changed(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "v.parquet"
    table = pa.table({"district": ["n", "s"], "count": [1, 2]})
    pq.write_table(table, path)
    info = catalog.add("visits", path)
    assert catalog.status(info).state == "ok"
    assert catalog.status(info, schema=False).state == "ok"

    pq.write_table(pa.table({"district": ["n"], "count": [5]}), path)
    _touch_later(path)
    modified = catalog.status(info, schema=False)
    assert modified.state == "modified" and "row count (2)" in modified.detail
    assert "fednode dataset add visits" in modified.hint and "--replace" in modified.hint

    pq.write_table(pa.table({"district": ["n"]}), path)
    _touch_later(path)
    assert catalog.status(info, schema=False).state == "modified"
    changed = catalog.status(info)
    assert changed.state == "schema-changed" and "--replace" in changed.hint

    path.unlink()
    for check_schema in (True, False):
        missing = catalog.status(info, schema=check_schema)
        assert missing.state == "missing" and str(path) in missing.detail
        assert "--replace" in missing.hint


def test_status_notices_files_added_to_a_directory(tmp_path: Path, catalog: Catalog) -> None:
    data = tmp_path / "dir"
    data.mkdir()
    pq.write_table(pa.table({"x": [1]}), data / "a.parquet")
    info = catalog.add("d", data)
    assert catalog.status(info, schema=False).state == "ok"
    pq.write_table(pa.table({"x": [2]}), data / "b.parquet")
    status = catalog.status(info, schema=False)
    assert status.state == "modified" and "b.parquet" in status.detail


def test_replace_keeps_reviewed_labels_and_description(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "v.parquet"
    pq.write_table(
        pa.table(
            {
                "district": ["n"],
                "person_id": ["p"],
                "age": pa.array([3], pa.int64()),
                "secret": ["s"],
            }
        ),
        path,
    )
    before = catalog.add(
        "visits",
        path,
        labels={"district": "public", "person_id": "internal", "age": "public"},
        description="reviewed 2024",
    )
    pq.write_table(
        pa.table(
            {
                "district": ["n"],
                "person_id": ["p"],
                "age": ["30-39"],
                "patient_name": ["x"],
            }
        ),
        path,
    )
    after = catalog.add("visits", path, replace=True)
    assert after.labels == {
        "district": "public",
        "person_id": "internal",
        "age": "personal",
        "patient_name": "personal",
    }
    assert after.description == "reviewed 2024"
    changes = SchemaChanges.between(before.schema, after.schema)
    assert (changes.new, changes.dropped, changes.retyped) == (
        ["patient_name"],
        ["secret"],
        ["age"],
    )
    assert changes.kept == ["district", "person_id"]

    again = catalog.add(
        "visits", path, replace=True, labels={"district": "internal"}, description=""
    )
    assert again.labels["district"] == "internal" and again.labels["person_id"] == "internal"
    assert again.description == ""
    assert catalog.get("visits") == again


def test_progress_of_a_directory_of_csv_files_spans_them_all(
    tmp_path: Path, catalog: Catalog
) -> None:
    data = tmp_path / "parts"
    data.mkdir()
    for part in range(3):
        (data / f"part{part}.csv").write_text(
            "a,b\n" + "".join(f"{i},x{i}\n" for i in range(1, 100_001))
        )
    total = sum(f.stat().st_size for f in data.iterdir())
    seen: list[ReadProgress] = []
    assert catalog.add("parts", data, fmt="csv", on_progress=seen.append).rows == 300_000
    assert seen[-1] == ReadProgress(300_000, total, total)
    read = [p.bytes_read for p in seen]
    assert read == sorted(read)
    # Within each file as well as between them.
    assert any(total // 3 < b < 2 * total // 3 for b in read)
    assert sum(1 for b in read if 0 < b < total) >= 3


def test_progress_of_a_compressed_csv_counts_rows_without_a_total(
    tmp_path: Path, catalog: Catalog
) -> None:
    path = tmp_path / "visits.csv.gz"
    with gzip.open(path, "wt") as out:
        out.write("n,m\n" + "".join(f"{i},{i * 2}\n" for i in range(300_000)))
    seen: list[ReadProgress] = []
    assert catalog.add("zipped", path, fmt="csv", on_progress=seen.append).rows == 300_000
    assert len(seen) > 2 and seen[-1].rows == 300_000
    assert all(p.bytes_total is None for p in seen), seen[:3]
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)


# --- a folder is one table ------------------------------------------------------


def _table(**columns: list[object]) -> pa.Table:
    return pa.table({name: pa.array(values) for name, values in columns.items()})


def test_a_folder_mixing_tables_is_refused_naming_the_file_and_columns(
    tmp_path: Path, catalog: Catalog
) -> None:
    # The first file's schema would otherwise be the dataset's, and a column only
    # the other file has would be read as nulls, or leak in under its name.
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(_table(accident_id=[1, 2], severity=["low", "high"]), folder / "a.parquet")
    pq.write_table(_table(accident_id=[3], intersection_id=["x9"]), folder / "b.parquet")
    mismatch = r"b\.parquet does not have the schema of .*a\.parquet"
    with pytest.raises(CatalogError, match=mismatch) as e:
        catalog.add("mixed", folder)
    text = str(e.value)
    assert "only in this file: intersection_id" in text
    assert "missing from this file: severity" in text
    assert "folders of their own" in (e.value.hint or "")
    assert catalog.list() == []


def test_a_folder_of_one_table_in_any_column_order_is_registered(
    tmp_path: Path, catalog: Catalog
) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    pq.write_table(_table(id=[1, 2], district=["n", "s"]), folder / "part-0.parquet")
    pq.write_table(_table(district=["e"], id=[3]), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")  # marker files are not data
    assert catalog.add("visits", folder).rows == 3


def test_an_empty_folder_is_refused(tmp_path: Path, catalog: Catalog) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(CatalogError, match="holds no parquet files"):
        catalog.add("empty", folder)


def test_a_folder_of_csv_files_is_read_as_csv(tmp_path: Path, catalog: Catalog) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    for day in (1, 2):
        (folder / f"day-{day}.csv").write_text(f"id,count\n{day},{day * 10}\n")
    info = catalog.add("daily", folder)
    assert info.format == "csv" and info.rows == 2
