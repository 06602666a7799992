"""Reading a dataset for a share after its data changed underneath its registration:
the failure names the dataset, column and line, and never the value, since the
message reaches the ledger (``share.failed``) and, for agreement errors, the peer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.catalog.loader import catalog_of, treated_scan
from node.errors import CatalogError
from tests.unit.catalog.agreement_fixture import active_agreement

# Past Arrow's first CSV block (1 MiB), where column types are inferred.
ROWS, BAD_ROW = 120_000, 110_000
SECRET = "Jane Citizen"


def write_csv(path: Path, bad: str | None = None) -> Path:
    lines = [f"d{i % 7},{i},{i % 90}\n" for i in range(1, ROWS + 1)]
    if bad is not None:
        lines[BAD_ROW - 1] = f"d0,{bad},1\n"
    path.write_text("district,person_id,age\n" + "".join(lines))
    return path


def test_a_value_that_no_longer_converts_is_reported_without_quoting_it(
    provider_runtime: Any, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "visits.csv")
    catalog_of(provider_runtime).add("visits", data)
    write_csv(data, bad=SECRET)  # same header and first rows: the schema still matches
    agreement_id = active_agreement(
        provider_runtime,
        {"person_id": {"treatment": "pseudonymize"}, "age": {"treatment": "plain"}},
        modes=["transfer"],
    )
    scan = treated_scan(provider_runtime, agreement_id, "transfer")
    with pytest.raises(CatalogError, match=r"column 'person_id' of dataset 'visits'") as failed:
        for _ in scan.batches():
            pass
    message = str(failed.value) + str(failed.value.hint)
    assert "Jane" not in message
    assert f"line {BAD_ROW + 1}" in message and "int64" in message
    assert "--replace" in (failed.value.hint or "")
