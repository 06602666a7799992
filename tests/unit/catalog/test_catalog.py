"""The catalog registry, column treatments, and the treated loader."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from node.admin.service import _public_kind
from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.policy import agreements_of
from node.catalog import treatments
from node.catalog.loader import catalog_of, load_treated_table, open_treated_reader
from node.catalog.registry import Catalog, infer_label
from node.cli.exit_codes import USAGE, code_for
from node.errors import AccessDenied, AgreementError, CatalogError
from tests.unit.catalog.agreement_fixture import CONSUMER, PROVIDER, active_agreement

TABLE = pa.table(
    {
        "person_id": ["p1", "p2", "p1", None],
        "age": pa.array([34, 7, 80, None], pa.int32()),
        "seen": pa.array(
            [datetime(2024, 1, 1, 10, 42), datetime(2024, 1, 1, 11, 5), None, datetime(2024, 2, 3)],
            pa.timestamp("us"),
        ),
        "district": ["north", "south", "north", "east"],
        "secret": ["a", "b", "c", "d"],
    }
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    pq.write_table(TABLE, tmp_path / "visits.parquet")
    (tmp_path / "dir").mkdir()
    pq.write_table(TABLE.slice(0, 2), tmp_path / "dir" / "a.parquet")
    pq.write_table(TABLE.slice(2), tmp_path / "dir" / "b.parquet")
    pacsv.write_csv(TABLE.select(["district", "age"]), tmp_path / "v.csv")
    with pa.ipc.new_file(tmp_path / "v.arrow", TABLE.schema) as w:
        w.write_table(TABLE)
    return {
        "parquet": tmp_path / "visits.parquet",
        "dir": tmp_path / "dir",
        "csv": tmp_path / "v.csv",
        "arrow": tmp_path / "v.arrow",
    }


@pytest.mark.parametrize(
    ("kind", "fmt", "rows"),
    [("parquet", "parquet", 4), ("dir", "parquet", 4), ("csv", "csv", 4), ("arrow", "arrow", 4)],
)
def test_add_each_format(
    tmp_path: Path, files: dict[str, Path], kind: str, fmt: str, rows: int
) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    info = catalog.add("visits", files[kind])
    assert (info.format, info.rows) == (fmt, rows)
    assert catalog.get("visits").schema.equals(info.schema)
    assert [d.name for d in catalog.list()] == ["visits"]


def test_labels_default_conservatively_and_can_be_set(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    info = catalog.add("visits", files["parquet"], labels={"district": "public"})
    assert info.labels == {
        "person_id": "personal",
        "age": "personal",
        "seen": "internal",
        "district": "public",
        "secret": "internal",
    }
    assert "public" not in {infer_label(n) for n in ["x", "value", "count", "flag"]}


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("Bad Name", {}, "is not valid"),
        ("visits", {"labels": {"nope": "public"}}, "labels name columns not in visits: nope"),
        ("visits", {"labels": {"age": "secretish"}}, "is not one of"),
        ("visits", {"fmt": "xlsx"}, "unknown dataset format"),
    ],
)
def test_add_refusals(
    tmp_path: Path, files: dict[str, Path], name: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(CatalogError, match=match) as refused:
        Catalog(tmp_path / "catalog.db").add(name, files["parquet"], **kwargs)
    # Usage errors: exit 2, also when the refusal comes back over the admin socket.
    assert code_for(refused.value) == USAGE
    assert _public_kind(refused.value) == "RequestError"


def test_add_refuses_duplicates_and_missing_paths(tmp_path: Path, files: dict[str, Path]) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.add("visits", files["parquet"])
    with pytest.raises(CatalogError, match="already registered"):
        catalog.add("visits", files["parquet"])
    with pytest.raises(CatalogError, match="does not exist"):
        catalog.add("other", tmp_path / "missing.parquet")
    with pytest.raises(CatalogError, match="cannot tell the format"):
        catalog.add("other", tmp_path / "catalog.db")
    with pytest.raises(CatalogError, match="no dataset named"):
        catalog.get("ghost")


def test_open_refuses_a_changed_schema(tmp_path: Path, files: dict[str, Path]) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.add("visits", files["parquet"])
    pq.write_table(TABLE.drop_columns(["secret"]), files["parquet"])
    with pytest.raises(CatalogError, match="changed its schema") as changed:
        catalog.open("visits")
    assert "--replace" in (changed.value.hint or "")
    # Reviewed: re-registered under the same name, with the new schema.
    info = catalog.add("visits", files["parquet"], replace=True)
    assert "secret" not in info.schema.names and [d.name for d in catalog.list()] == ["visits"]
    info, _ = catalog.open("visits")
    assert info.schema.names == TABLE.drop_columns(["secret"]).column_names


# --- treatments -------------------------------------------------------------

SPEC: dict[str, dict[str, Any]] = {
    "person_id": {"treatment": "pseudonymize", "params": {}},
    "age": {"treatment": "generalize", "params": {"band": 10}},
    "seen": {"treatment": "generalize", "params": {"to": "hour"}},
    "district": {"treatment": "plain", "params": {}},
    "secret": {"treatment": "drop", "params": {}},
}


def _treat(key: bytes, spec: dict[str, dict[str, Any]] = SPEC) -> pa.Table:
    schema = treatments.treated_schema(TABLE.schema, spec)
    return pa.Table.from_batches(
        [treatments.apply(b, spec, schema, key) for b in TABLE.to_batches()]
    )


def test_treatments() -> None:
    key = b"k" * 32
    out = _treat(key)
    assert out.column_names == ["person_id", "age", "seen", "district"]
    tokens = out["person_id"].to_pylist()
    assert tokens[0] == tokens[2] == hmac.new(key, b"p1", hashlib.sha256).hexdigest()
    assert tokens[1] != tokens[0] and tokens[3] is None
    assert out["age"].to_pylist() == ["30-39", "0-9", "80-89", None]
    assert out["seen"].to_pylist() == [
        datetime(2024, 1, 1, 10),
        datetime(2024, 1, 1, 11),
        None,
        datetime(2024, 2, 3),
    ]
    assert out["district"].to_pylist() == TABLE["district"].to_pylist()


def test_pseudonyms_are_unlinkable_across_agreement_keys() -> None:
    a = set(_treat(b"a" * 32)["person_id"].to_pylist()) - {None}
    b = set(_treat(b"b" * 32)["person_id"].to_pylist()) - {None}
    assert a and b and not (a & b)


def test_columns_not_named_never_appear() -> None:
    out = _treat(b"k" * 32, {"district": {"treatment": "plain", "params": {}}})
    assert out.column_names == ["district"]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"ghost": {"treatment": "plain"}}, "dataset lacks: ghost"),
        (
            {"district": {"treatment": "generalize", "params": {"band": 5}}},
            "needs an integer column",
        ),
        (
            {"age": {"treatment": "generalize", "params": {"to": "hour"}}},
            "needs a timestamp or date",
        ),
    ],
)
def test_treatment_refusals(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(AgreementError, match=match):
        treatments.treated_schema(TABLE.schema, spec)


# --- loader -----------------------------------------------------------------


def _agreement(runtime: Any, **over: Any) -> str:
    return active_agreement(runtime, over.pop("columns", SPEC), **over)


def test_loader_applies_treatments(provider_runtime: Any, files: dict[str, Path]) -> None:
    catalog_of(provider_runtime).add("visits", files["dir"])
    agreement = _agreement(provider_runtime)
    table = load_treated_table(provider_runtime, agreement, "federated")
    assert table.column_names == ["person_id", "age", "seen", "district"]
    assert table.num_rows == 4
    reader = open_treated_reader(provider_runtime, agreement, "federated")
    assert reader.read_all().equals(table)


def test_loader_refusals_are_recorded(provider_runtime: Any, files: dict[str, Path]) -> None:
    catalog_of(provider_runtime).add("visits", files["parquet"])
    agreement = _agreement(provider_runtime)
    with pytest.raises(AccessDenied, match="does not allow mode 'transfer'"):
        open_treated_reader(provider_runtime, agreement, "transfer")
    agreements_of(provider_runtime).revoke(agreement, "done")
    with pytest.raises(AccessDenied, match="revoked"):
        load_treated_table(provider_runtime, agreement, "federated")
    events = [e["event"] for e in provider_runtime.audit.entries]
    assert events == ["access.denied", "access.denied"]


def test_loader_stops_mid_read_on_revocation(provider_runtime: Any, tmp_path: Path) -> None:
    big = pa.table({"district": [f"d{i}" for i in range(10_000)]})
    pq.write_table(big, tmp_path / "big.parquet", row_group_size=1000)
    catalog_of(provider_runtime).add("visits", tmp_path / "big.parquet")
    agreement = _agreement(provider_runtime, columns={"district": {"treatment": "plain"}})
    from node.catalog.loader import treated_scan

    scan = treated_scan(provider_runtime, agreement, "federated", batch_rows=1000)
    batches = scan.batches()
    next(batches)
    agreements_of(provider_runtime).revoke(agreement, "stop now")
    with pytest.raises(AccessDenied, match="was revoked"):
        next(batches)


def test_loader_refuses_consumer_side(consumer_runtime: Any) -> None:
    consumer = consumer_runtime
    now = int(time.time())
    signed = SignedAgreement.sign(
        new_agreement(
            federation="gov",
            provider="health",
            consumer="statistics",
            dataset="visits",
            purpose_code="S",
            purpose_text="",
            valid_from=now - 1,
            valid_until=now + 60,
            modes=["federated"],
            columns=SPEC,
            created=now,
        ),
        PROVIDER,
    )
    agreements_of(consumer).activate(signed.countersign(CONSUMER))
    with pytest.raises(AccessDenied, match="does not name this node"):
        load_treated_table(consumer, signed.id, "federated")
