"""Data that cannot be opened, at registration or later at share time: every
refusal names the cause and a fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from node.catalog.registry import Catalog
from node.errors import CatalogError


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.db")


def twin_columns(path: Path) -> Path:
    """A Parquet file with two columns named ``a``: the second one holds other data."""
    table = pa.table([pa.array(["x"]), pa.array(["other"]), pa.array(["y"])], ["a", "a", "b"])
    pq.write_table(table, path)
    return path


def test_a_file_with_twin_columns_added_to_a_folder_stops_shares(
    tmp_path: Path, catalog: Catalog
) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), folder / "1.parquet")
    info = catalog.add("visits", folder)
    twin_columns(folder / "2.parquet")
    with pytest.raises(CatalogError, match=r"2\.parquet has two columns named 'a'") as refused:
        catalog.open("visits")
    assert "rename" in (refused.value.hint or "")
    assert catalog.status(info).state == "unreadable"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.parquet", b"", "empty.parquet as parquet"),
        ("cut.parquet", b"PAR1\x00\x00PAR1", "cut.parquet as parquet"),
        ("empty.csv", b"", "empty.csv as csv"),
        ("cut.arrow", b"ARROW1", "cut.arrow as arrow"),
        ("twins.parquet", None, "two columns named 'a'"),
        ("twins.arrow", None, "two columns named 'a'"),
        ("twins.csv", b"a,b,a\nx,y,other\n", "two columns named 'a'"),
    ],
)
def test_files_that_cannot_be_opened_are_refused_with_a_hint(
    tmp_path: Path, catalog: Catalog, name: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / name
    if content is None and name.endswith(".arrow"):
        twins = pa.table([pa.array(["x"]), pa.array(["other"])], ["a", "a"])
        with pa.ipc.new_file(path, twins.schema) as writer:
            writer.write_table(twins)
    elif content is None:
        twin_columns(path)
    else:
        path.write_bytes(content)
    with pytest.raises(CatalogError, match=match) as refused:
        catalog.add("visits", path)
    assert refused.value.hint
    assert catalog.list() == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_columns_named_like_the_readers_own_fields_are_refused_by_name(
    tmp_path: Path, catalog: Catalog, fmt: str
) -> None:
    # pyarrow's dataset reader adds __filename (the provider's path) and others
    # to every scan; a column of that name would be ambiguous.
    table = pa.table({"__filename": ["real"], "x": [1]})
    path = tmp_path / f"visits.{fmt}"
    if fmt == "csv":
        path.write_text("__filename,x\nreal,1\n")
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        with pa.ipc.new_file(path, table.schema) as writer:
            writer.write_table(table)
    with pytest.raises(CatalogError, match="'__filename' is a name the reader keeps") as refused:
        catalog.add("visits", path)
    assert "rename" in (refused.value.hint or "")


def test_a_symlink_loop_is_refused_as_a_catalog_error(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "a.parquet").symlink_to(tmp_path / "b.parquet")
    (tmp_path / "b.parquet").symlink_to(tmp_path / "a.parquet")
    with pytest.raises(CatalogError, match="cannot resolve") as refused:
        catalog.add("visits", tmp_path / "a.parquet")
    assert "link" in (refused.value.hint or "")


def test_a_link_pointed_elsewhere_after_registration_changes_nothing_shared(
    tmp_path: Path, catalog: Catalog
) -> None:
    reviewed, other = tmp_path / "reviewed.parquet", tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": ["reviewed"]}), reviewed)
    pq.write_table(pa.table({"a": ["other table"]}), other)
    link = tmp_path / "current.parquet"
    link.symlink_to(reviewed)
    info = catalog.add("visits", link)
    assert info.path == reviewed
    link.unlink()
    link.symlink_to(other)
    opened, dataset = catalog.open("visits")
    assert dataset.to_table().column("a").to_pylist() == ["reviewed"]
    assert catalog.status(opened).state == "ok"


def test_a_file_the_node_may_not_read_is_refused_naming_the_account(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "visits.parquet"
    pq.write_table(pa.table({"a": ["x"]}), path)
    # Tests run as root, whom permissions do not stop: the check is what is under test.
    monkeypatch.setattr("node.catalog.registry.os.access", lambda p, mode: Path(p) != path)
    with pytest.raises(CatalogError, match="may not read") as refused:
        catalog.add("visits", path)
    assert "fednode serve" in (refused.value.hint or "")


def test_a_column_name_that_is_not_utf8_is_refused(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "latin1.csv").write_bytes(b"caf\xe9,b\n1,2\n")
    with pytest.raises(CatalogError, match="column name that is not UTF-8") as refused:
        catalog.add("visits", tmp_path / "latin1.csv")
    assert "UTF-8" in (refused.value.hint or "")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "1.csv").write_bytes(b"a,b\n1,2\n")
    (folder / "2.csv").write_bytes(b"a,caf\xe9\n1,2\n")
    with pytest.raises(CatalogError, match=r"2\.csv has a column name that is not UTF-8"):
        catalog.add("visits", folder)
