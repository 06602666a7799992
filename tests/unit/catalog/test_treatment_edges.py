"""Column treatments at the edges: types Python cannot hold, nested columns,
daylight-saving time, times whose floor would not fit, and what a failure says."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pyarrow as pa
import pytest

from node.catalog import treatments
from node.errors import AgreementError

KEY = b"k" * 32
PSEUDONYMIZE: dict[str, Any] = {"treatment": "pseudonymize"}


def treat(array: pa.Array, spec: dict[str, Any]) -> pa.Array:
    schema = treatments.treated_schema(pa.schema({"c": array.type}), {"c": spec})
    batch = pa.record_batch({"c": array})
    return treatments.apply(batch, {"c": spec}, schema, KEY).column(0)


def token(text: str) -> str:
    return hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()


# --- pseudonymize -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "inputs"),
    [
        (
            pa.array(
                [1_700_000_000_000_000_001, 1_700_000_000_000_000_000, None], pa.timestamp("ns")
            ),
            ["timestamp[ns] 1700000000000000001", "2023-11-14 22:13:20", None],
        ),
        (pa.array([1], pa.time64("ns")), ["time64[ns] 1"]),
        (pa.array([5], pa.duration("ns")), ["duration[ns] 5"]),
        (pa.array([2**62], pa.timestamp("us")), [f"timestamp[us] {2**62}"]),
        (pa.array([2**31 - 1], pa.int32()).cast(pa.date32()), [f"date32[day] {2**31 - 1}"]),
    ],
    ids=["timestamp-ns", "time-ns", "duration-ns", "timestamp-past-9999", "date-past-9999"],
)
def test_pseudonymize_tokens_temporal_values_python_cannot_hold(
    array: pa.Array, inputs: list[str | None]
) -> None:
    # Nanoseconds and years past 9999 have no Python datetime: they are hashed as
    # their type and stored integer, and every other value as before.
    assert treat(array, PSEUDONYMIZE).to_pylist() == [
        None if i is None else token(i) for i in inputs
    ]


def test_pseudonymize_tokens_do_not_depend_on_the_batch() -> None:
    ns = pa.timestamp("ns")
    alone = treat(pa.array([1_000], ns), PSEUDONYMIZE).to_pylist()
    beside = treat(pa.array([1_000, 1_001], ns), PSEUDONYMIZE).to_pylist()
    assert alone == beside[:1]


@pytest.mark.parametrize(
    "kind",
    [
        pa.list_(pa.string()),
        pa.struct([pa.field("x", pa.int64())]),
        pa.map_(pa.string(), pa.string()),
    ],
)
def test_pseudonymize_of_a_nested_column_is_refused_when_agreed(kind: pa.DataType) -> None:
    with pytest.raises(AgreementError, match="pseudonymize needs a column of single values"):
        treatments.treated_schema(pa.schema({"c": kind}), {"c": PSEUDONYMIZE})
