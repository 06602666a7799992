"""Column treatments at the edges: types Python cannot hold, nested columns,
daylight-saving time, times whose floor would not fit, and what a failure says."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog import treatments
from node.errors import AgreementError
from node.exchange.ipc_message import unsupported_type

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


# --- generalize to a time unit --------------------------------------------------------


def to(unit: str) -> dict[str, Any]:
    return {"treatment": "generalize", "params": {"to": unit}}


def instants(values: list[datetime], tz: str) -> pa.Array:
    return pa.array(values, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=tz))


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "unit", "values", "floors"),
    [
        # 01:30 local happens twice on 2024-10-27 in London: at 00:30 UTC (BST) and
        # at 01:30 UTC (GMT); each floors to the 01:00 of its own offset.
        ("Europe/London", "hour", [utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1, 30)],
         [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1)]),
        # Lord Howe Island moves from 02:00 to 02:30 on 2024-10-06: 02:45 local floors
        # to an hour that does not exist, so to the first instant after the gap.
        ("Australia/Lord_Howe", "hour", [utc(2024, 10, 5, 15, 45)], [utc(2024, 10, 5, 15, 30)]),
        ("Asia/Kolkata", "hour", [utc(2024, 5, 1, 5, 20)], [utc(2024, 5, 1, 4, 30)]),
        ("Europe/London", "day", [utc(2024, 3, 31, 12)], [utc(2024, 3, 31, 0)]),
    ],
    ids=["ambiguous-hour", "missing-hour", "half-hour-zone", "short-day"],
)  # fmt: skip
def test_generalize_floors_in_local_time_across_daylight_saving(
    tz: str, unit: str, values: list[datetime], floors: list[datetime]
) -> None:
    out = treat(instants(values, tz), to(unit))
    assert out.type == pa.timestamp("us", tz=tz)
    assert out.cast(pa.timestamp("us", tz="UTC")).to_pylist() == floors


@settings(max_examples=150, deadline=None)
@given(
    seconds=st.integers(1_600_000_000, 1_800_000_000),
    tz=st.sampled_from(["Europe/London", "America/Santiago", "Australia/Lord_Howe", "UTC"]),
    unit=st.sampled_from(["minute", "hour", "day", "month", "year"]),
)
def test_generalize_in_local_time_agrees_with_arrow_where_arrow_can(
    seconds: int, tz: str, unit: str
) -> None:
    array = pa.array([seconds], pa.timestamp("s", tz=tz))
    try:
        expected = pc.floor_temporal(array, unit=unit)
    except pa.ArrowInvalid:  # the local floor is ambiguous or missing: covered above
        return
    assert treat(array, to(unit)).equals(expected)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TIME_TYPES = [
    pa.timestamp("s"),
    pa.timestamp("ms"),
    pa.timestamp("us"),
    pa.timestamp("ns"),
    pa.timestamp("s", tz="Europe/London"),
    pa.timestamp("ns", tz="America/New_York"),
    pa.date32(),
    pa.date64(),
]


def limits(kind: pa.DataType) -> list[int]:
    """The extreme stored values of ``kind`` that lie outside the years 1-9999; a
    nanosecond timestamp's range (1677-2262) lies inside, so only its lowest
    value, whose floor does not fit, is refused."""
    if kind == pa.date32():
        return [-(2**31), 2**31 - 1]
    if getattr(kind, "unit", None) == "ns":
        return [INT64_MIN + 1]
    return [INT64_MIN + 1, INT64_MAX]


@pytest.mark.parametrize("kind", TIME_TYPES, ids=str)
@pytest.mark.parametrize("unit", ["hour", "year"])
def test_generalize_refuses_times_it_cannot_floor_without_quoting_them(
    kind: pa.DataType, unit: str
) -> None:
    storage = pa.int32() if kind == pa.date32() else pa.int64()
    for raw in limits(kind):
        array = pa.array([0, raw, None], storage).view(kind)
        with pytest.raises(AgreementError, match="1 value cannot be generalized") as refused:
            treat(array, to(unit))
        assert str(raw) not in str(refused.value) + str(refused.value.hint)


# Ticks per second of each zone-less time type, and its storage type.
TICKS: dict[pa.DataType, tuple[int, pa.DataType]] = {
    pa.timestamp("s"): (1, pa.int64()),
    pa.timestamp("ms"): (10**3, pa.int64()),
    pa.timestamp("us"): (10**6, pa.int64()),
    pa.timestamp("ns"): (10**9, pa.int64()),
    pa.date64(): (10**3, pa.int64()),
}
SPAN = {"minute": 60, "hour": 3600, "day": 86400}
FIRST, LAST = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)
EPOCH = datetime(1970, 1, 1)


def floor_by_definition(value: int, kind: pa.DataType, unit: str) -> int | None:
    """The floor of a zone-less time, or None where it must be refused: the value
    lies outside the years 1-9999, or its floor does not fit the type."""
    if kind == pa.date32():
        ticks, storage, seconds = 1, pa.int32(), value * 86400
    else:
        ticks, storage = TICKS[kind]
        seconds = value // ticks
    if not (FIRST - EPOCH).total_seconds() <= seconds <= (LAST - EPOCH).total_seconds():
        return None
    if kind == pa.date32():
        day = date(1970, 1, 1) + timedelta(days=value)
        day = {"month": day.replace(day=1), "year": day.replace(month=1, day=1)}.get(unit, day)
        floor = (day - date(1970, 1, 1)).days
    elif unit in SPAN:
        floor = value - value % (SPAN[unit] * ticks)
    else:
        start = (EPOCH + timedelta(seconds=seconds)).replace(day=1, hour=0, minute=0, second=0)
        if unit == "year":
            start = start.replace(month=1)
        floor = (start - EPOCH) // timedelta(seconds=1) * ticks
    bits = storage.bit_width - 1
    return floor if -(2**bits) <= floor < 2**bits else None


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from([k for k in TIME_TYPES if getattr(k, "tz", None) is None]),
    unit=st.sampled_from(["minute", "hour", "day", "month", "year"]),
)
def test_generalize_gives_the_floor_or_refuses(
    data: st.DataObject, kind: pa.DataType, unit: str
) -> None:
    storage = pa.int32() if kind == pa.date32() else pa.int64()
    bits = storage.bit_width - 1
    low, high = -(2**bits) + (0 if kind == pa.date32() else 1), 2**bits - 1
    # Ordinary times, the first and last days of the years 1 and 9999, the type's limits.
    per_day = {pa.date32(): 1, pa.date64(): 86_400_000}.get(kind, 86400 * TICKS.get(kind, (1,))[0])
    edges = [low, high, 0, -1, -719_162 * per_day, 2_932_897 * per_day - 1, -719_163 * per_day]
    value = data.draw(
        st.integers(low, high) | st.sampled_from([e for e in edges if low <= e <= high])
    )
    if kind == pa.date64():  # a date64 holds whole days
        value -= value % 86_400_000 if value - value % 86_400_000 >= low else -86_400_000
    expected = floor_by_definition(value, kind, unit)
    array = pa.array([value], storage).view(kind)
    if expected is None:
        with pytest.raises(AgreementError, match="cannot be generalized") as refused:
            treat(array, to(unit))
        assert str(value) not in str(refused.value)
    else:
        assert treat(array, to(unit)).view(storage)[0].as_py() == expected


# --- what leaves with the data ------------------------------------------------------


def test_a_treatment_failure_names_the_column_but_never_quotes_arrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrow's messages may quote the values they failed on.
    def fail(array: pa.Array, key: bytes) -> pa.Array:
        raise pa.ArrowInvalid("could not hash 'Jane Citizen'")

    monkeypatch.setattr(treatments, "_pseudonymize", fail)
    with pytest.raises(AgreementError, match="column 'c' could not be pseudonymized") as failed:
        treat(pa.array(["Jane Citizen"]), PSEUDONYMIZE)
    assert "Jane" not in str(failed.value) + str(failed.value.hint)
    assert "Jane" in str(failed.value.__cause__)  # the local traceback keeps the detail


def test_metadata_and_unused_dictionary_values_never_leave() -> None:
    note = {"note": "e.g. 123-45-6789"}
    point = pa.struct([pa.field("x", pa.int64(), metadata=note)])
    words = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), ["used", "UNUSED"])
    table = pa.table(
        {
            "p": pa.array([{"x": 1}], point),
            "l": pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), words),
            "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
        }
    )
    source = table.schema.with_metadata({"pandas": "names the dropped column ssn"})
    source = source.set(0, source.field("p").with_metadata(note))
    plain = {"treatment": "plain"}
    spec = {"p": plain, "l": plain, "m": plain}
    schema = treatments.treated_schema(source, spec)
    out = treatments.apply(table.to_batches()[0].cast(source), spec, schema, KEY)
    for shown in (schema, out.schema):
        assert shown.metadata is None
        assert "123-45" not in str(shown) and "UNUSED" not in str(shown)
        assert not any(pa.types.is_dictionary(f.type) for f in shown)
    assert shown.field("l").type == pa.list_(pa.string())
    assert "UNUSED" not in str(out.column("l").values)
    assert out.to_pylist() == [{"p": {"x": 1}, "l": ["used"], "m": [("k", 1)]}]


def test_plain_view_columns_travel_as_types_a_share_can_carry() -> None:
    inner = pa.struct([pa.field("b", pa.binary_view())])
    table = pa.table(
        {
            "s": pa.array(["x", None], pa.string_view()),
            "n": pa.array([{"b": b"\x01"}, None], inner),
        }
    )
    plain = {"treatment": "plain"}
    spec = {"s": plain, "n": plain}
    schema = treatments.treated_schema(table.schema, spec)
    assert unsupported_type(schema) is None
    assert schema.field("s").type == pa.large_string()
    out = treatments.apply(table.to_batches()[0], spec, schema, KEY)
    assert out.to_pylist() == table.to_pylist()


@pytest.mark.parametrize(
    "kind",
    [
        pa.map_(pa.string(), pa.int64(), keys_sorted=True),
        pa.list_(pa.int8(), 3),
        pa.large_list(pa.field("x", pa.int16(), nullable=False)),
        pa.struct([pa.field("a", pa.list_(pa.float32())), pa.field("b", pa.date32())]),
        pa.timestamp("ns", tz="Europe/London"),
        pa.decimal128(10, 2),
    ],
    ids=str,
)
def test_plain_types_without_metadata_or_dictionaries_pass_unchanged(kind: pa.DataType) -> None:
    schema = treatments.treated_schema(pa.schema({"c": kind}), {"c": {"treatment": "plain"}})
    assert str(schema.field("c").type) == str(kind)


def test_a_time_zone_arrow_does_not_know_is_reported_as_such() -> None:
    array = pa.array([0], pa.int64()).view(pa.timestamp("s", tz="Mars/Olympus_Mons"))
    with pytest.raises(AgreementError, match=r"column 'c' could not be generalized \(Arrow"):
        treat(array, to("hour"))


# --- data behind nulls ----------------------------------------------------------------


def masked(values: pa.Array, hide: list[bool]) -> pa.Array:
    """``values`` with slots made null by their validity bits only: the data stays behind."""
    bits = sum(1 << i for i, h in enumerate(hide) if not h).to_bytes(8, "little")
    buffers = [pa.py_buffer(bits), *values.buffers()[1:]]
    return pa.Array.from_buffers(values.type, len(values), buffers)


SECRET_INT = 424_242_424_242
HIDE_MIDDLE = [False, True, False]


def behind_nulls() -> pa.RecordBatch:
    person = pa.StructArray.from_arrays(
        [
            pa.array(["ann", "SECRET-PARENT", "cy"]),
            masked(pa.array(["x", "y", "SECRET-CHILD"]), [False, False, True]),
        ],
        names=["name", "note"],
        mask=pa.array(HIDE_MIDDLE),
    )
    lists = pa.ListArray.from_arrays(
        pa.array([0, 1, 2, 3], pa.int32()),
        pa.array(["a", "SECRET-ITEM", "c"]),
        mask=pa.array(HIDE_MIDDLE),
    )
    return pa.record_batch(
        {
            "ints": masked(pa.array([1, SECRET_INT, 3], pa.int64()), HIDE_MIDDLE),
            "text": masked(pa.array(["a", "SECRET-TEXT", "c"]), HIDE_MIDDLE),
            "seen": masked(pa.array([0, SECRET_INT * 1000, 0], pa.timestamp("us")), HIDE_MIDDLE),
            "person": person,
            "lists": lists,
        }
    )


def test_nothing_behind_a_null_leaves_in_a_share() -> None:
    # Arrow files keep the data behind a null (masking a value may only clear
    # its validity bit), and a share's chunks carry Arrow buffers as they are.
    batch = behind_nulls()
    assert b"SECRET-ITEM" in batch.serialize().to_pybytes()  # the premise
    spec = {name: {"treatment": "plain"} for name in batch.schema.names} | {"seen": to("hour")}
    schema = treatments.treated_schema(batch.schema, spec)
    out = treatments.apply(batch, spec, schema, KEY)
    sent = out.serialize().to_pybytes()
    assert b"SECRET" not in sent
    hour = SECRET_INT * 1000 // 3_600_000_000 * 3_600_000_000
    for number in (SECRET_INT, SECRET_INT * 1000, hour):
        assert number.to_bytes(8, "little") not in sent
    assert out.to_pylist() == [
        {
            "ints": 1,
            "text": "a",
            "seen": datetime(1970, 1, 1),
            "person": {"name": "ann", "note": "x"},
            "lists": ["a"],
        },
        {"ints": None, "text": None, "seen": None, "person": None, "lists": None},
        {
            "ints": 3,
            "text": "c",
            "seen": datetime(1970, 1, 1),
            "person": {"name": "cy", "note": None},
            "lists": ["c"],
        },
    ]


def test_nothing_behind_a_null_leaves_from_any_nested_type() -> None:
    hide = pa.array(HIDE_MIDDLE)
    secret_rows = pa.array(["a", "SECRET-1", "c"])
    inner = pa.StructArray.from_arrays(
        [masked(pa.array(["x", "SECRET-2", "z"]), HIDE_MIDDLE)], names=["v"]
    )
    columns = {
        "fixed": pa.FixedSizeListArray.from_arrays(secret_rows, 1, mask=hide),
        "map": pa.MapArray.from_arrays(
            pa.array([0, 1, 2, 3], pa.int32()), pa.array(["k", "k", "k"]), secret_rows, mask=hide
        ),
        "large": pa.LargeListArray.from_arrays(
            pa.array([0, 1, 2, 3], pa.int64()), secret_rows, mask=hide
        ),
        "deep": pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), inner),
        "sliced": pa.ListArray.from_arrays(
            pa.array([0, 1, 2, 3], pa.int32()), secret_rows, mask=hide
        ),
    }
    batch = pa.record_batch(columns)
    spec = {name: {"treatment": "plain"} for name in columns}
    schema = treatments.treated_schema(batch.schema, spec)
    for part in (batch, batch.slice(1, 2)):
        out = treatments.apply(part, spec, schema, KEY)
        assert b"SECRET" not in out.serialize().to_pybytes()
        assert out.to_pylist() == part.to_pylist()


def test_a_time_behind_a_null_cannot_fail_a_generalization() -> None:
    for tz, raw in (("Europe/London", INT64_MIN + 1), ("Asia/Tokyo", INT64_MAX)):
        kind = pa.timestamp("s", tz=tz)
        hidden = masked(pa.array([0, raw, 0], pa.int64()), HIDE_MIDDLE).view(kind)
        out = treat(hidden, to("hour"))
        assert out.to_pylist()[1] is None and out.null_count == 1


@pytest.mark.parametrize(
    "spec", [PSEUDONYMIZE, {"treatment": "generalize", "params": {"band": 10}}]
)
def test_pseudonyms_and_bands_are_built_without_what_is_behind_a_null(spec: dict[str, Any]) -> None:
    hidden = masked(pa.array([1, SECRET_INT, 3], pa.int64()), HIDE_MIDDLE)
    out = treat(hidden, spec)
    sent = pa.record_batch({"c": out}).serialize().to_pybytes()
    for secret in (token(str(SECRET_INT)), str(SECRET_INT // 10 * 10)):
        assert secret.encode() not in sent
    assert out.to_pylist()[1] is None
