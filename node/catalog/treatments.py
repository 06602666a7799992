"""Column treatments an agreement applies before data leaves the provider.

* ``plain`` passes the column's values through unchanged.
* ``pseudonymize`` replaces each value with hex HMAC-SHA256 under a key that
  belongs to one agreement: the same value gives the same token within that
  agreement and unrelated tokens across agreements. Nulls stay null. Only
  columns of single values (text, numbers, times, binary) can be pseudonymized.
* ``generalize`` coarsens a value: a timestamp or date to ``{"to": "hour"}``
  (or minute, day, month, year; a zoned time in its own local time), an
  integer to a band ``{"band": 10}`` rendered as text such as ``"30-39"``.
* ``drop`` removes the column.

Invariants:

* :func:`apply` emits exactly the columns of :func:`treated_schema`, and a
  column that the agreement does not name is never in either;
* nothing from the source file travels but the treated values: no schema or
  field metadata at any depth, no dictionary (with its unused values), and no
  bytes behind a null;
* an error raised here never quotes a value (it reaches the consumer and the
  ledger); Arrow's own message, which may, goes to the local log only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from node.errors import AgreementError

__all__ = ["TREATMENTS", "apply", "produces", "treated_schema", "validate_spec"]

TREATMENTS = ("plain", "pseudonymize", "generalize", "drop")
log = logging.getLogger("fednode.catalog")
_DONE = {
    "plain": "passed on",
    "pseudonymize": "pseudonymized",
    "generalize": "generalized",
}
_TIME_UNITS = ("minute", "hour", "day", "month", "year")
_MAX_BAND = 10**12
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TICKS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
# 0001-01-01 and 9999-12-31 in days from the Unix epoch.
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896
_SPAN_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_SPAN_DAYS = {"minute": 1, "hour": 1, "day": 1, "month": 31, "year": 366}
# The largest daylight-saving shift in the time zone database (double summer time).
_SHIFT_SECONDS = 2 * 3600


def validate_spec(name: str, spec: Any, field: pa.Field | None = None) -> None:
    """Check one column's treatment, and its fit with the column type if known.

    Raises:
        AgreementError: unknown treatment, bad parameters, or a type the
            treatment cannot handle.
    """
    if not isinstance(spec, Mapping) or set(spec) - {"treatment", "params"}:
        raise AgreementError(f"column {name!r}: treatment must be {{treatment, params}}")
    treatment = spec.get("treatment")
    params = spec.get("params", {})
    if treatment not in TREATMENTS:
        raise AgreementError(
            f"column {name!r}: unknown treatment {treatment!r}",
            hint=f"use one of {', '.join(TREATMENTS)}",
        )
    if not isinstance(params, Mapping):
        raise AgreementError(f"column {name!r}: params must be an object")
    if treatment != "generalize":
        if params:
            raise AgreementError(f"column {name!r}: {treatment} takes no params")
        if treatment == "pseudonymize" and field is not None and pa.types.is_nested(field.type):
            raise AgreementError(
                f"column {name!r}: pseudonymize needs a column of single values "
                f"(text, numbers, times, binary), the column is {field.type}",
                hint=f"share {name!r} as plain, or drop it",
            )
        return
    if set(params) == {"to"}:
        if params["to"] not in _TIME_UNITS:
            raise AgreementError(
                f"column {name!r}: generalize 'to' must be one of {', '.join(_TIME_UNITS)}"
            )
        if field is not None and not (
            pa.types.is_timestamp(field.type) or pa.types.is_date(field.type)
        ):
            raise AgreementError(
                f"column {name!r}: generalize to {params['to']} needs a timestamp or date, "
                f"the column is {field.type}"
            )
        return
    if set(params) == {"band"}:
        band = params["band"]
        if not isinstance(band, int) or isinstance(band, bool) or not 1 <= band <= _MAX_BAND:
            raise AgreementError(f"column {name!r}: generalize 'band' must be an integer >= 1")
        if field is not None and not pa.types.is_integer(field.type):
            raise AgreementError(
                f"column {name!r}: generalize to bands needs an integer column, "
                f"the column is {field.type}"
            )
        return
    raise AgreementError(
        f"column {name!r}: generalize needs one parameter, to=UNIT "
        f"({'|'.join(_TIME_UNITS)}) for a time or band=WIDTH for an integer",
        hint=f"e.g. --column {name}=generalize:band=10 or --column {name}=generalize:to=hour",
    )


def _output_type(field: pa.Field, spec: Mapping[str, Any]) -> pa.DataType | None:
    treatment = spec["treatment"]
    if treatment == "drop":
        return None
    if treatment == "pseudonymize":
        return pa.string()
    if treatment == "generalize" and "band" in spec.get("params", {}):
        return pa.string()
    return field.type


def produces(spec: Mapping[str, Any], kind: pa.DataType) -> bool:
    """Whether a column treated by ``spec`` can arrive with type ``kind``.

    The recipient's check of what a provider sent: ``pseudonymize`` and
    ``generalize`` to bands give text, ``generalize`` to a time unit keeps a
    timestamp or date, ``plain`` keeps any type, and ``drop`` gives no column.
    """
    treatment = spec.get("treatment")
    params = spec.get("params") or {}
    if treatment == "plain":
        return True
    if treatment == "pseudonymize" or (treatment == "generalize" and "band" in params):
        return bool(kind == pa.string())
    if treatment == "generalize" and "to" in params:
        return bool(pa.types.is_timestamp(kind) or pa.types.is_date(kind))
    return False


def treated_schema(schema: pa.Schema, columns: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """The schema after treatments, in the dataset's column order.

    Raises:
        AgreementError: the agreement names a column the dataset lacks, or a
            treatment does not fit the column type.
    """
    missing = sorted(set(columns) - set(schema.names))
    if missing:
        raise AgreementError(
            f"agreement names columns the dataset lacks: {', '.join(missing)}",
            hint="the dataset changed; draw up a new agreement",
        )
    fields = []
    for field in schema:
        if field.name not in columns:
            continue
        validate_spec(field.name, columns[field.name], field)
        out = _output_type(field, columns[field.name])
        if out is not None:
            fields.append(pa.field(field.name, _public_type(out), nullable=True))
    return pa.schema(fields)


def _public_type(kind: pa.DataType) -> pa.DataType:
    """``kind`` without field metadata, dictionaries or string views, at any depth.

    The source file's metadata (pandas' column list, a writer's notes, sample
    values) and a dictionary's unused values would otherwise travel in the
    share's schema and batches.
    """
    if pa.types.is_dictionary(kind):
        return _public_type(kind.value_type)
    # Shares carry no view types (their buffer counts vary): same values, other layout.
    if kind == pa.string_view():
        return pa.large_string()
    if kind == pa.binary_view():
        return pa.large_binary()
    if pa.types.is_struct(kind):
        return pa.struct([_public_field(kind.field(i)) for i in range(kind.num_fields)])
    if pa.types.is_map(kind):
        key, item = _public_field(kind.key_field), _public_field(kind.item_field)
        return pa.map_(key, item, keys_sorted=kind.keys_sorted)
    if pa.types.is_list(kind):
        return pa.list_(_public_field(kind.value_field))
    if pa.types.is_large_list(kind):
        return pa.large_list(_public_field(kind.value_field))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_public_field(kind.value_field), kind.list_size)
    if pa.types.is_list_view(kind):
        return pa.list_view(_public_field(kind.value_field))
    if pa.types.is_large_list_view(kind):
        return pa.large_list_view(_public_field(kind.value_field))
    if pa.types.is_union(kind):
        children = [_public_field(kind.field(i)) for i in range(kind.num_fields)]
        return pa.union(children, kind.mode, kind.type_codes)
    return kind


def _public_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, _public_type(field.type), nullable=field.nullable)


def _token_input(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _token_inputs(values: pa.Array) -> list[bytes | None]:
    """What is hashed for each value: its bytes, or the text of its Python value.

    A temporal value Python cannot hold (a nanosecond, a year past 9999) is
    hashed as its type and stored integer, e.g. ``timestamp[ns] 1700000000000000001``.
    The choice is made per value, so a value's token never depends on the
    other values in its batch.
    """
    try:
        python = values.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        python = _nanoseconds(values) or [_python_value(values, i) for i in range(len(values))]
    return [None if v is None else _token_input(v) for v in python]


def _nanoseconds(values: pa.Array) -> list[object] | None:
    """:func:`_python_value` of every value of a nanosecond time, at array speed.

    A whole number of microseconds is the Python value of the same time in
    microseconds; any other value is its type and stored integer. ``None`` for
    other types, or when the microseconds do not convert either.
    """
    kind = values.type
    if getattr(kind, "unit", None) != "ns":
        return None
    stored = values.view(pa.int64()).to_pylist()
    try:
        micro = values.cast(_in_microseconds(kind), safe=False).to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        return None
    return [
        None if n is None else (m if n % 1000 == 0 else f"{kind} {n}")
        for n, m in zip(stored, micro, strict=True)
    ]


def _in_microseconds(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", kind.tz)
    if pa.types.is_time(kind):
        return pa.time64("us")
    return pa.duration("us")


def _python_value(values: pa.Array, i: int) -> object:
    try:
        return values[i].as_py()
    except (ValueError, OverflowError, pa.ArrowException):
        stored = values.slice(i, 1).view(pa.int32() if values.type.bit_width == 32 else pa.int64())
        return f"{values.type} {stored[0].as_py()}"


def _pseudonymize(array: pa.Array, key: bytes) -> pa.Array:
    # Each distinct value is hashed once; the tokens are then gathered back in place.
    encoded = pc.dictionary_encode(array)
    tokens = [
        None if v is None else hmac.new(key, v, hashlib.sha256).hexdigest()
        for v in _token_inputs(encoded.dictionary)
    ]
    return pa.array(tokens, pa.string()).take(encoded.indices)


def _band(array: pa.Array, width: int) -> pa.Array:
    """``"low-high"`` per value: ``low = floor(value / width) * width``, ``high = low + width - 1``.

    Exact for every integer type, up to its extremes: the quotient is taken in
    the column's own signedness (64 bits), and the few values whose band ends
    do not fit in int64 (within one band of the type's extremes) are rendered
    from Python integers instead of wrapping around.
    """
    values = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
    unsigned = values.dtype.kind == "u"
    values = values.astype(np.uint64 if unsigned else np.int64)
    quotient = values // values.dtype.type(width)
    # Quotients whose band ends both fit in int64.
    lowest, highest = -(2**63 // width), (2**63 - width) // width
    outside = quotient > highest
    if not unsigned:
        outside |= quotient < lowest
    low = np.where(outside, 0, quotient).astype(np.int64) * width
    low_text = pc.cast(pa.array(low), pa.string())
    high_text = pc.cast(pa.array(low + (width - 1)), pa.string())
    joined = pc.binary_join_element_wise(low_text, high_text, "-")
    if outside.any():
        exact = [f"{int(q) * width}-{int(q) * width + width - 1}" for q in quotient[outside]]
        joined = pc.replace_with_mask(joined, pa.array(outside), pa.array(exact, pa.string()))
    return pc.if_else(pc.is_null(array), pa.nulls(len(array), pa.string()), joined)


def _stored(array: pa.Array) -> pa.Array:
    """A time array's stored integers (days for date32, else ticks of its unit)."""
    return array.view(pa.int32() if pa.types.is_date32(array.type) else pa.int64())


def _time_limits(kind: pa.DataType, unit: str) -> tuple[int, int, int]:
    """The stored values of the years 1-9999 in ``kind``, and the most a floor to
    ``unit`` may lie below its value (a local day or month may be longer by a
    daylight-saving shift)."""
    if pa.types.is_date32(kind):
        return _FIRST_DAY, _LAST_DAY, _SPAN_DAYS[unit]
    ticks = 1000 if pa.types.is_date64(kind) else _TICKS[kind.unit]
    span = _SPAN_DAYS[unit] * 86400 if unit in ("month", "year") else _SPAN_SECONDS[unit]
    if getattr(kind, "tz", None):
        span += _SHIFT_SECONDS
    lowest = max(_FIRST_DAY * 86400 * ticks, _INT64_MIN)
    highest = min((_LAST_DAY + 1) * 86400 * ticks - 1, _INT64_MAX)
    return lowest, highest, span * ticks


def _floor_local(array: pa.Array, unit: str) -> pa.Array:
    """Floor to ``unit`` in the column's own time zone, resolving DST: a local floor
    that happens twice is the occurrence at or before the value, and one that a
    clock change skips is the first instant after the gap."""
    kind = array.type
    try:
        # Arrow floors zoned times in local time too, but refuses a floor that
        # is ambiguous or skipped; it is the fast path, and the same floor.
        return pc.floor_temporal(array, unit=unit)
    except pa.ArrowInvalid:
        if not (pa.types.is_timestamp(kind) and kind.tz):
            raise
    local = pc.floor_temporal(pc.local_timestamp(array), unit=unit)
    earlier = pc.assume_timezone(local, kind.tz, ambiguous="earliest", nonexistent="latest")
    later = pc.assume_timezone(local, kind.tz, ambiguous="latest", nonexistent="latest")
    return pc.if_else(pc.less_equal(later, array), later, earlier)


def _generalize_time(array: pa.Array, unit: str, column: str) -> pa.Array:
    """The floor of every value, or a refusal that never quotes one.

    Arrow's floor wraps around silently near the limits of a type, so the
    values are checked against the years 1-9999 first, and every floor
    afterwards: it must lie at or below its value, and within one ``unit``.
    """
    lowest, highest, span = _time_limits(array.type, unit)
    stored = _stored(array)
    outside = pc.sum(pc.or_(pc.less(stored, lowest), pc.greater(stored, highest))).as_py()
    if outside:
        raise _unfit(column, unit, array.type, outside)
    # An Arrow error (an unknown time zone) goes to apply(), which never quotes it.
    floored = _floor_local(array, unit)
    floors = _stored(floored)
    # The subtraction wraps around; where the floor is at or below its value,
    # a negative difference means more than 2**63 below it.
    below = pc.subtract(stored, floors)
    wrong = pc.sum(
        pc.or_(
            pc.greater(floors, stored),
            pc.or_(pc.less(below, 0), pc.greater_equal(below, span)),
        )
    ).as_py()
    if wrong:
        raise _unfit(column, unit, array.type, wrong)
    return floored


def _unfit(column: str, unit: str, kind: pa.DataType, count: int) -> AgreementError:
    some = f"{count} value{'' if count == 1 else 's'}"
    return AgreementError(
        f"column {column!r}: {some} cannot be generalized to {unit}: outside the years "
        f"1-9999, or too near the limits of {kind} for the {unit} to fit",
        hint="correct those values in the dataset (they are never sent raw), "
        "or drop the column in a new agreement",
    )


def _treat(array: pa.Array, spec: Mapping[str, Any], key: bytes, column: str) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    treatment = spec["treatment"]
    if treatment == "plain":
        return array
    if treatment == "pseudonymize":
        return _pseudonymize(array, key)
    params = spec.get("params", {})
    if "band" in params:
        return _band(array, int(params["band"]))
    return _generalize_time(array, params["to"], column)


def _scrubbed(array: pa.Array) -> pa.Array:
    """``array`` with nothing behind its nulls, at any depth.

    A null slot of an Arrow array may still hold a value (masking a column
    often only clears validity bits; Arrow IPC files keep those bytes), a
    null list its items and a null struct its fields, and a share's chunks
    carry Arrow buffers as they are. Taking a null index leaves an empty slot;
    nested columns are rebuilt from their scrubbed children. An array without
    nulls, of a type without children, is returned as it is.
    """
    if array.null_count:
        hide = pc.is_null(array).to_numpy(zero_copy_only=False)
        array = array.take(pa.array(np.arange(len(array)), mask=hide))
    kind = array.type
    mask = pc.is_null(array) if array.null_count else None
    if pa.types.is_struct(kind) and kind.num_fields:
        fields = [kind.field(i) for i in range(kind.num_fields)]
        children = [_scrubbed(array.field(i)) for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    if pa.types.is_fixed_size_list(kind):
        size = kind.list_size
        values = array.values.slice(array.offset * size, len(array) * size)
        return pa.FixedSizeListArray.from_arrays(_scrubbed(values), type=kind, mask=mask)
    if pa.types.is_map(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        # Offsets index into the whole child; a null slot may still span items.
        ends = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(ends)
        if mask is None:
            items = array.values.slice(ends[0], ends[-1] - ends[0])
        else:
            lengths[mask.to_numpy(zero_copy_only=False)] = 0
            kept = np.concatenate([[0], np.cumsum(lengths)])
            index = np.arange(kept[-1]) + np.repeat(ends[:-1] - kept[:-1], lengths)
            items = array.values.take(pa.array(index))
        offsets_type = pa.int64() if pa.types.is_large_list(kind) else pa.int32()
        starts = pa.array(np.concatenate([[0], np.cumsum(lengths)]), offsets_type)
        items = _scrubbed(items)
        if pa.types.is_map(kind):
            keys, values = items.field(0), items.field(1)
            return pa.MapArray.from_arrays(starts, keys, values, type=kind, mask=mask)
        cls = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
        return cls.from_arrays(starts, items, type=kind, mask=mask)
    return array


def apply(
    batch: pa.RecordBatch,
    columns: Mapping[str, Mapping[str, Any]],
    schema: pa.Schema,
    pseudonym_key: bytes,
) -> pa.RecordBatch:
    """Apply the treatments to ``batch``; ``schema`` is from :func:`treated_schema`.

    Raises:
        AgreementError: a column cannot be treated as specified.
    """
    arrays = []
    for field in schema:
        spec = columns[field.name]
        try:
            treated = _treat(batch.column(field.name), spec, pseudonym_key, field.name)
            # Plain nested columns lose dictionaries (and their unused values) here.
            if not treated.type.equals(field.type):
                treated = treated.cast(field.type)
            # Pseudonyms and bands are built afresh, with nothing behind their nulls.
            if spec["treatment"] == "plain" or "to" in (spec.get("params") or {}):
                treated = _scrubbed(treated)
            arrays.append(treated)
        except (pa.ArrowException, KeyError, ValueError, OverflowError) as e:
            # Arrow's message may quote the values it failed on: it goes to the
            # local log and the chained exception, never into the error, which
            # reaches the consumer and the ledger.
            log.warning("column %r could not be treated: %s", field.name, e)
            raise AgreementError(
                f"column {field.name!r} could not be {_DONE[spec['treatment']]} "
                f"({type(e).__name__})",
                hint="the provider's node log shows the cause; the data may have "
                "changed since it was registered ('fednode dataset show')",
            ) from e
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
