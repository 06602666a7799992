"""Column treatments: what each one produces, as the provider applies it and the
consumer checks it, and integer bands at the edges of their types."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from node.catalog import treatments

SPECS: dict[str, dict[str, Any]] = {
    "plain": {"treatment": "plain"},
    "pseudonymize": {"treatment": "pseudonymize"},
    "band": {"treatment": "generalize", "params": {"band": 10}},
    "hour": {"treatment": "generalize", "params": {"to": "hour"}},
}
SOURCE_TYPES = {
    "plain": [pa.int64(), pa.string(), pa.list_(pa.float32()), pa.timestamp("ms")],
    "pseudonymize": [pa.int64(), pa.string(), pa.binary(), pa.date32()],
    "band": [pa.int8(), pa.int64(), pa.uint64()],
    "hour": [pa.timestamp("us", tz="UTC"), pa.timestamp("s"), pa.date32()],
}


@pytest.mark.parametrize("name", SPECS)
def test_what_the_provider_emits_is_what_the_consumer_accepts(name: str) -> None:
    spec = SPECS[name]
    for source in SOURCE_TYPES[name]:
        schema = treatments.treated_schema(pa.schema({"c": source}), {"c": spec})
        assert treatments.produces(spec, schema.field("c").type), (name, source)


@pytest.mark.parametrize(
    ("name", "arrived"),
    [
        ("pseudonymize", pa.int64()),
        ("pseudonymize", pa.large_string()),
        ("pseudonymize", pa.binary()),
        ("band", pa.int32()),
        ("hour", pa.string()),
        ("hour", pa.int64()),
    ],
)
def test_types_a_treatment_cannot_produce_are_refused(name: str, arrived: pa.DataType) -> None:
    assert not treatments.produces(SPECS[name], arrived)


def test_a_dropped_column_produces_nothing() -> None:
    assert not treatments.produces({"treatment": "drop"}, pa.string())
    assert not treatments.produces({"treatment": "unknown"}, pa.string())
