"""The catalog's admin commands: an operator who goes away stops a registration."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from node.admin.cancel import CommandCancelledError, cancellable
from node.catalog.admin import dataset_add, dataset_show
from node.catalog.loader import catalog_of
from node.catalog.registry import CatalogRequestError


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_cancelled_registration_registers_nothing(
    provider_runtime: Any, tmp_path: Path, suffix: str
) -> None:
    table = pa.table({"district": ["n", "s"], "age": [3, 4]})
    path = tmp_path / f"visits{suffix}"
    if suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    gone = threading.Event()
    gone.set()  # the operator pressed Ctrl-C while the data was read
    with cancellable(gone), pytest.raises(CommandCancelledError):
        dataset_add(provider_runtime, {"name": "visits", "path": str(path)}, lambda _: None)
    assert catalog_of(provider_runtime).list() == []
    assert provider_runtime.audit.entries == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"path": "/data/visits.parquet"}, "needs a dataset name"),
        ({"name": "visits"}, "needs the dataset's path"),
        # Relative to what? The node's working directory is not the operator's.
        ({"name": "visits", "path": "visits.parquet"}, "must be absolute"),
        ({"name": "visits", "path": "/x.parquet", "labels": ["a"]}, "labels must map"),
    ],
)
def test_dataset_add_refuses_unusable_arguments(
    provider_runtime: Any, args: dict[str, Any], match: str
) -> None:
    with pytest.raises(CatalogRequestError, match=match):
        dataset_add(provider_runtime, args, lambda _: None)


def test_dataset_show_needs_a_name(provider_runtime: Any) -> None:
    with pytest.raises(CatalogRequestError, match="needs a dataset name"):
        dataset_show(provider_runtime, {}, lambda _: None)
