"""Column treatments: what each one produces, as the provider applies it and the
consumer checks it, and integer bands at the edges of their types."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- integer bands ------------------------------------------------------------------


def band_of(value: int, width: int) -> str:
    """The band by definition, in Python integers (which do not overflow)."""
    low = value // width * width
    return f"{low}-{low + width - 1}"


def banded(values: list[int | None], kind: pa.DataType, width: int) -> list[str | None]:
    spec = {"treatment": "generalize", "params": {"band": width}}
    schema = treatments.treated_schema(pa.schema({"n": kind}), {"n": spec})
    batch = pa.record_batch({"n": pa.array(values, kind)})
    out: list[str | None] = treatments.apply(batch, {"n": spec}, schema, b"k").column(0).to_pylist()
    return out


INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


@pytest.mark.parametrize(
    ("values", "kind", "width", "expected"),
    [
        (
            [INT64_MAX, INT64_MIN, None, 0, -1],
            pa.int64(),
            10,
            [
                "9223372036854775800-9223372036854775809",
                "-9223372036854775810--9223372036854775801",
                None,
                "0-9",
                "-10--1",
            ],
        ),
        (
            [UINT64_MAX, 2**63, 2**63 - 1],
            pa.uint64(),
            10,
            [
                "18446744073709551610-18446744073709551619",
                "9223372036854775800-9223372036854775809",
                "9223372036854775800-9223372036854775809",
            ],
        ),
        ([-128, 127], pa.int8(), 1000, ["-1000--1", "0-999"]),
        ([255], pa.uint8(), 10**12, ["0-999999999999"]),
        (
            [INT64_MAX, INT64_MIN],
            pa.int64(),
            10**12,
            [band_of(INT64_MAX, 10**12), band_of(INT64_MIN, 10**12)],
        ),
        (
            [INT64_MAX, INT64_MIN],
            pa.int64(),
            1,
            [f"{INT64_MAX}-{INT64_MAX}", f"{INT64_MIN}-{INT64_MIN}"],
        ),
    ],
    ids=[
        "int64-extremes",
        "uint64-above-int64",
        "int8-wide",
        "uint8-widest",
        "int64-widest",
        "width-1",
    ],
)
def test_bands_at_the_extremes_of_integer_types_do_not_wrap(
    values: list[int | None], kind: pa.DataType, width: int, expected: list[str | None]
) -> None:
    assert banded(values, kind, width) == expected


INTEGER_TYPES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (INT64_MIN, INT64_MAX),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, UINT64_MAX),
}


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=st.sampled_from(list(INTEGER_TYPES)))
def test_bands_match_their_definition_for_any_integer(
    data: st.DataObject, kind: pa.DataType
) -> None:
    low, high = INTEGER_TYPES[kind]
    # Values near the extremes are where fixed-width arithmetic would go wrong.
    value = st.integers(low, high) | st.sampled_from([low, high, low + 1, high - 1, 0])
    values = data.draw(st.lists(value | st.none(), min_size=1, max_size=20))
    width = data.draw(st.integers(1, 10**12) | st.sampled_from([1, 7, 10, 10**12]))
    expected = [None if v is None else band_of(v, width) for v in values]
    assert banded(values, kind, width) == expected
