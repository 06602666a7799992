"""``fednode dataset`` against a real node: a bad value deep in a CSV is refused
at registration, list and show report missing or changed data, and ``--replace``
keeps reviewed labels and the description."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from node.localfed import DepartmentSpec
from tests.integration.helpers import fednode

pytestmark = pytest.mark.integration

CATALOG_EXIT = 9


def _listing(home: Path) -> dict[str, Any]:
    result = fednode("dataset", "list", "--json", "--home", home, check=True)
    return {d["name"]: d for d in json.loads(result.stdout)["datasets"]}


def test_dataset_add_show_list_and_replace(federation_factory: Any, tmp_path: Path) -> None:
    fed = federation_factory([DepartmentSpec("health", "Health Commission")])
    home = fed.homes["health"]

    deep = tmp_path / "deep.csv"
    with deep.open("w") as f:
        f.write("person_id,age,district\n")
        for i in range(1, 150_001):
            f.write(f"p{i},{'unknown' if i == 120_000 else i % 90},d{i % 7}\n")
    refused = fednode("dataset", "add", "deep", deep, "--home", home)
    assert refused.returncode == CATALOG_EXIT, refused.stdout + refused.stderr
    assert "column 'age'" in refused.stderr and "line 120001" in refused.stderr
    assert "'unknown'" in refused.stderr and "hint" in refused.stderr.lower()
    assert _listing(home) == {}

    # A file still being written (here: empty) is refused with the cause and a fix.
    (tmp_path / "partial.parquet").write_bytes(b"")
    partial = fednode("dataset", "add", "partial", tmp_path / "partial.parquet", "--home", home)
    assert partial.returncode == CATALOG_EXIT, partial.stdout + partial.stderr
    assert "0 bytes" in partial.stderr and "complete parquet file" in partial.stderr

    data = tmp_path / "visits.parquet"
    pq.write_table(pa.table({"district": ["n"], "age": [3], "secret": ["s"]}), data)
    fednode(
        "dataset", "add", "visits", data, "--label", "district=public",
        "--description", "reviewed", "--home", home, check=True,
    )  # fmt: skip
    assert _listing(home)["visits"]["status"]["state"] == "ok"

    pq.write_table(pa.table({"district": ["n"], "age": ["3"], "ward": ["w"]}), data)
    shown = fednode("dataset", "show", "visits", "--home", home)
    assert shown.returncode == 0 and "schema-changed" in shown.stdout
    assert "--replace" in shown.stdout

    replaced = fednode("dataset", "add", "visits", data, "--replace", "--home", home, check=True)
    assert "new columns (default label, review them): ward" in replaced.stdout
    assert "dropped columns: secret" in replaced.stdout
    assert "columns with a new type (default label, review them): age" in replaced.stdout
    after = _listing(home)["visits"]
    assert after["description"] == "reviewed"
    assert {c["name"]: c["label"] for c in after["columns"]} == {
        "district": "public",
        "age": "personal",
        "ward": "internal",
    }

    data.unlink()
    listed = fednode("dataset", "list", "--home", home, check=True)
    assert "missing" in listed.stdout and "--replace" in listed.stdout
    shown = fednode("dataset", "show", "visits", "--home", home, check=True)
    assert "missing" in shown.stdout and "no longer exists" in shown.stdout
