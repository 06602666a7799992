"""Canonical JSON: the byte form of every signed or hashed document in fednode.

The rules are RFC 8785 (JSON Canonicalization Scheme) restricted to the values
fednode uses: objects, arrays, strings, booleans, null and integers. Floats are
refused outright, because their canonical form depends on ECMAScript number
formatting and invites two encoders to disagree on the bytes that get hashed.
Integers must fit in an IEEE double exactly (|n| <= 2**53 - 1) for the same
reason.

Invariant: ``dumps(loads(b)) == b`` for every ``b`` that ``loads`` accepts, so
a document that parses is byte-for-byte the document that was signed.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.errors import CanonicalJSONError

__all__ = ["MAX_SAFE_INTEGER", "dumps", "fast_dumps", "loads", "plain"]

MAX_SAFE_INTEGER = 2**53 - 1

# One encoder for the fast path: building a JSONEncoder per call costs more
# than encoding a ledger entry. Cycles cannot occur in values that passed
# _plain (it would recurse without end first), so the cycle check is off.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, check_circular=False
)


def _utf16_key(key: str) -> list[int]:
    # RFC 8785 sorts object members by their UTF-16 code units, not code points.
    # surrogatepass: a lone surrogate must reach _check_string, which refuses it by path.
    encoded = key.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(encoded[i : i + 2], "big") for i in range(0, len(encoded), 2)]


def _check(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            _check_string(value, path)
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"{path}: integer {value} is outside ±(2**53-1)")
        return value
    if isinstance(value, float):
        raise CanonicalJSONError(f"{path}: floats are not allowed in canonical JSON")
    if isinstance(value, dict):
        ordered: dict[str, Any] = {}
        for key in sorted(value, key=lambda k: _utf16_key(k) if isinstance(k, str) else [-1]):
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{path}: object key {key!r} is not a string")
            _check_string(key, f"{path}.{key}")
            ordered[key] = _check(value[key], f"{path}.{key}")
        return ordered
    if isinstance(value, list | tuple):
        return [_check(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise CanonicalJSONError(f"{path}: type {type(value).__name__} has no canonical JSON form")


def _check_string(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalJSONError(f"{path}: string holds a lone surrogate") from e


def _bmp_only(text: str) -> bool:
    # Below U+10000 and without surrogates, UTF-16 order equals code point order.
    return all(ord(c) < 0xD800 or 0xE000 <= ord(c) <= 0xFFFF for c in text)


def _plain(value: Any) -> bool:
    """Return True if the C encoder's output for ``value`` is canonical.

    This is the fast path for the common case (ASCII or BMP keys, safe
    integers, no floats); anything else goes through :func:`_check`, which
    either orders keys by UTF-16 code units or raises with the exact path.
    String values are not inspected here: a lone surrogate makes the final
    UTF-8 encoding fail, and :func:`dumps` then takes the slow path too.
    Scalars are tested inline because this runs for every ledger append.
    """
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
        for key in value:
            if type(key) is not str or not (key.isascii() or _bmp_only(key)):
                return False
    elif kind is list or kind is tuple:
        items = value
    else:
        items = (value,)
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _plain(item):
                return False
        else:
            return False
    return True


def plain(value: Any) -> bool:
    """Return True if :func:`fast_dumps` may encode ``value`` (see :func:`_plain`)."""
    try:
        return _plain(value)
    except RecursionError:
        return False


def fast_dumps(value: Any) -> bytes:
    """Encode a value for which :func:`plain` returned True; falls back to :func:`dumps`.

    Raises:
        CanonicalJSONError: as :func:`dumps`.
    """
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return dumps(value)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (UTF-8).

    Raises:
        CanonicalJSONError: the value holds a float, an unsafe integer, a
            non-string key, a lone surrogate, or a type JSON cannot express.
    """
    try:
        plain = _plain(value)
    except RecursionError as e:
        raise CanonicalJSONError("value nested too deeply") from e
    if plain:
        text = _ENCODER.encode(value)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    checked = _check(value, "$")
    return json.dumps(checked, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, val in pairs:
        if key in result:
            raise CanonicalJSONError(f"duplicate object key {key!r}")
        result[key] = val
    return result


def _refuse_float(text: str) -> Any:
    raise CanonicalJSONError(f"float {text} is not allowed in canonical JSON")


def _refuse_constant(text: str) -> Any:
    raise CanonicalJSONError(f"{text} is not valid JSON")


def loads(data: bytes) -> Any:
    """Parse canonical JSON and check that ``data`` is exactly in canonical form.

    Raises:
        CanonicalJSONError: the bytes are not UTF-8, not JSON, hold a float or
            a duplicate key, or are valid JSON but not in canonical form.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CanonicalJSONError(f"not UTF-8: {e}") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
        )
    except json.JSONDecodeError as e:
        raise CanonicalJSONError(f"not JSON: {e}") from e
    except RecursionError as e:
        raise CanonicalJSONError("JSON nested too deeply") from e
    if dumps(value) != data:
        raise CanonicalJSONError("JSON is valid but not in canonical form (RFC 8785)")
    return value
