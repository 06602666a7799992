"""The shape check accepts a batch only when the strict entry parser accepts every entry."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps, loads
from ledger.entry import (
    ENTRY_FIELDS,
    GENESIS_PREV,
    parse_entry,
    plain_fields,
    prepare_entry,
    validate_fields,
)
from ledger.errors import LedgerError
from ledger.shapes import ShapeCache, parse_canonical_lines
from tests.unit.ledger.helpers import strict_chain_ok

#: Recorded events of a few shapes, as a log repeats them.
EVENTS: list[tuple[dict[str, Any], frozenset[str]]] = [
    ({"event": "rpc.started", "actor": "operator", "detail": {"method": "/a/B"}}, frozenset()),
    ({"event": "rpc.finished", "peer": "beta", "detail": {"code": 0, "x": [1, "é"]}}, frozenset()),
    ({"event": "rpc.finished", "peer": "gama", "detail": {"code": 0, "x": [1, "é"]}}, frozenset()),
    (
        {"event": "share.sent", "peer": "beta", "purpose": "p", "detail": {"share_id": "s1"}},
        frozenset(),
    ),
    ({"event": "access.read", "actor": "Jane", "detail": {"k": "v"}}, frozenset({"actor"})),
]
TIME0 = 1_795_900_664_875


def _render(kinds: list[int], first_seq: int, prev: str, times: list[int]) -> list[bytes]:
    lines = []
    for i, kind in enumerate(kinds):
        fields, sensitive = EVENTS[kind]
        prepared = prepare_entry("alpha", fields, sensitive)
        raw = prepared.render(first_seq + i, times[i], bytes.fromhex(prev) if i or prev else None)
        lines.append(raw)
        prev = hashlib.sha256(b"\0" + raw).hexdigest()
    return lines


def _leaf(raw: bytes) -> bytes:
    return hashlib.sha256(b"\0" + raw).digest()


def _links(lines: list[bytes]) -> bytes:
    return b"".join(_leaf(raw) for raw in lines[:-1])


def _own_prev(raw: bytes) -> str:
    try:
        return parse_entry(raw).prev
    except LedgerError:
        return ""


def _relink(lines: list[bytes], index: int) -> None:
    """Point the entry after ``index`` at the (possibly changed) line ``index``."""
    if index + 1 < len(lines):
        old = lines[index + 1]
        cut = old.rfind(b'"prev":"') + 8
        lines[index + 1] = old[:cut] + _leaf(lines[index]).hex().encode() + old[cut + 64 :]
        _relink(lines, index + 1)


def _trained(kinds: list[int]) -> tuple[ShapeCache, list[bytes]]:
    cache = ShapeCache("alpha")
    first = _render(kinds, 0, "", [TIME0 + i for i in range(len(kinds))])
    assert cache.check_batch(first, 0, GENESIS_PREV.encode(), _links(first)) is not None
    return cache, first


def test_a_log_of_repeated_shapes_is_confirmed_and_shares_are_returned() -> None:
    kinds = [0, 1, 2, 3, 4] * 3
    cache, first = _trained(kinds)
    prev = _leaf(first[-1]).hex()
    second = _render(kinds, len(kinds), prev, [TIME0 + 100 + i for i in range(len(kinds))])
    confirmed = cache.check_batch(second, len(kinds), prev.encode(), _links(second))
    assert confirmed is not None
    first_prev, shares = confirmed
    assert first_prev == prev
    assert [s["seq"] for s in shares] == [len(kinds) + i for i in (3, 8, 13)]
    assert all(s == loads(second[s["seq"] - len(kinds)]) for s in shares)


def test_the_first_prev_is_returned_when_the_caller_links_it() -> None:
    cache = ShapeCache("alpha")
    lines = _render([0, 0, 1], 0, "", [TIME0, TIME0, TIME0])
    confirmed = cache.check_batch(lines, 0, None, _links(lines))
    assert confirmed is not None and confirmed[0] == GENESIS_PREV


def test_another_node_is_refused() -> None:
    cache = ShapeCache("beta")
    lines = _render([0, 1], 0, "", [TIME0, TIME0])
    assert cache.check_batch(lines, 0, GENESIS_PREV.encode(), _links(lines)) is None


def test_a_log_of_unique_entries_goes_to_the_strict_path() -> None:
    cache = ShapeCache("alpha")
    lines = [
        prepare_entry("alpha", {"event": "x.y", "detail": {"n": i}}).render(i, TIME0, None)
        for i in range(40)
    ]
    _relink(lines, 0)
    assert strict_chain_ok(lines, 0, GENESIS_PREV)
    assert cache.check_batch(lines, 0, GENESIS_PREV.encode(), _links(lines)) is None


#: Byte edits that each break canonical form, the schema, the numbering or the chain.
EDITS = [
    (b'"v":1}', b'"v":2}'),
    (b'"v":1}', b'"v":01}'),
    (b'"seq":', b'"seq":0'),
    (b'"seq":', b'"seq": '),
    (b'"time":', b'"time":0'),
    (b'"time":', b'"time":-'),
    (b'"time":1', b'"time":1.0,"t":1'),
    (b'"time":1', b'"time":99999999999999999'),
    (b',"v":1}', b',"v":1,"v":1}'),
    (b'"node":"alpha"', b'"node":"alphb"'),
    (b'"node":"alpha"', b'"node":"\\u0061lpha"'),
    (b'"method":"/a/B"', b'"method":"/a\\/B"'),
    (b'"method":"/a/B"', b'"method":"/a/\\u0042"'),
    (b'"method":"/a/B"', b'"method":"/a/B","method":"/a/B"'),
    (b'"method":"/a/B"', b'"m\xe9thod":"/a/B"'),
    (b'"method":"/a/B"', b'"method":"/a/\xff"'),
    (b'"method":"/a/B"', b'"method":"/a/B","prev":"' + b"0" * 64 + b'"'),
    (b'"code":0', b'"code":-0'),
    (b'"code":0', b'"code":0.0'),
    (b'"code":0', b'"code":9007199254740992'),
    (b'"code":0,"x"', b'"x":[1],"code":0,"x"'),
    (b'"x":[1,', b'"x":[1 ,'),
    (b"\xc3\xa9", b"\\u00e9"),
    (b'"purpose":null', b'"purpose":"\\"prev\\":\\""'),
    (b'"purpose":"p"', b'"purpose":"p","prev":"' + b"0" * 64 + b'"'),
    (b'"sensitive":[]', b'"sensitive":["actor"]'),
    (b'"sensitive":["actor"]', b'"sensitive":[]'),
    (b'"actor":"sha256:', b'"actor":"sha256:0'),
    (b'"event":"rpc.started"', b'"event":"rpc.Started"'),
    (b'"outcome":"ok"', b'"outcome":"o k"'),
    # Same-length edits: the line keeps the offsets of a learned shape.
    (b'"sensitive":[]', b'"sensitive":{}'),
    (b'"purpose":null', b'"purpose":nulL'),
    (b'"code":0', b'"code":x'),
    (b"operator", b"operat\x01r"),
    (b'"peer":"beta"', b'"peer":"be\\a"'),
    (b"{", b"{ "),
    (b"}", b"} "),
    (b"}", b"}\x00"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(0, len(EVENTS) - 1), min_size=2, max_size=6),
    st.data(),
)
def test_the_shape_check_never_accepts_what_the_parser_refuses(
    kinds: list[int], data: st.DataObject
) -> None:
    cache, first = _trained(kinds)
    prev = _leaf(first[-1]).hex()
    times = data.draw(st.lists(st.integers(0, 10**16), min_size=len(kinds), max_size=len(kinds)))
    lines = _render(kinds, len(kinds), prev, times)
    index = data.draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    how = data.draw(st.sampled_from(["edit", "insert", "delete", "prev", "seq", "none"]))
    if how == "edit":
        old, new = data.draw(st.sampled_from([e for e in EDITS if e[0] in line] or [(b"", b"")]))
        at = data.draw(st.integers(0, max(line.count(old) - 1, 0))) if old else 0
        cut = -1
        for _ in range(at + 1):
            cut = line.find(old, cut + 1)
        line = line[:cut] + new + line[cut + len(old) :] if old else line
    elif how == "insert":
        at = data.draw(st.integers(0, len(line)))
        extra = data.draw(st.sampled_from([b" ", b"\t", b"\\", b'"', b",", b"0", b"\x80", b"\xff"]))
        line = line[:at] + extra + line[at:]
    elif how == "delete":
        at = data.draw(st.integers(0, len(line) - 1))
        line = line[:at] + line[at + 1 :]
    elif how == "prev":
        cut = line.rfind(b'"prev":"') + 8
        at = cut + data.draw(st.integers(0, 63))
        line = line[:at] + data.draw(st.sampled_from([b"A", b"g", b"1", b"f"])) + line[at + 1 :]
    elif how == "seq":
        seq = len(kinds) + index + data.draw(st.sampled_from([-1, 1, 10]))
        line = re.sub(rb'"seq":[0-9]+', b'"seq":%d' % seq, line)
    lines[index] = line
    _relink(lines, index)
    # Unlinked, the batch's first prev is only returned (the caller links it).
    linked = data.draw(st.booleans())
    confirmed = cache.check_batch(
        lines, len(kinds), prev.encode() if linked else None, _links(lines)
    )
    start = prev if linked else _own_prev(lines[0])
    strict = strict_chain_ok(lines, len(kinds), start)
    if confirmed is not None and not linked:
        assert confirmed[0] == start
    assert confirmed is None or strict, (how, line)
    if how == "none" and max(times) < 10**15 and sorted(times) == times:
        assert confirmed is not None


@pytest.mark.parametrize("time", [0, 7, 10**15 - 1])
def test_any_canonical_time_of_up_to_15_digits_fits_a_learned_shape(time: int) -> None:
    cache, first = _trained([0, 0])
    prev = _leaf(first[-1]).hex()
    lines = _render([0, 0], 2, prev, [time, time])
    assert cache.check_batch(lines, 2, prev.encode(), _links(lines)) is not None


def test_shapes_at_the_same_offsets_are_told_apart() -> None:
    # "beta" and "gama" have the same length: both shapes sit at the same offsets.
    kinds = [1, 2, 1, 2]
    cache, first = _trained(kinds)
    prev = _leaf(first[-1]).hex()
    lines = _render(kinds, 4, prev, [TIME0] * 4)
    assert cache.check_batch(lines, 4, prev.encode(), _links(lines)) is not None
    swapped = lines[:]
    swapped[0] = swapped[0].replace(b'"peer":"beta"', b'"peer":"gamb"')
    _relink(swapped, 0)
    assert cache.check_batch(swapped, 4, prev.encode(), _links(swapped)) is not None
    assert strict_chain_ok(swapped, 4, prev)


SAME_LENGTH = [
    (0, b'"sensitive":[]', b'"sensitive":{}'),
    (0, b'"purpose":null', b'"purpose":nulL'),
    (0, b"operator", b"operat\x01r"),
    (0, b'"v":1}', b'"v":2}'),
    (1, b'"code":0', b'"code":x'),
    (1, b'"peer":"beta"', b'"peer":"be\\a"'),
    (3, b'"purpose":"p"', b'"purpose":"\x00"'),
]


@pytest.mark.parametrize(("kind", "old", "new"), SAME_LENGTH)
def test_a_same_length_edit_of_a_learned_shape_is_refused(
    kind: int, old: bytes, new: bytes
) -> None:
    cache, first = _trained([kind, kind])
    prev = _leaf(first[-1]).hex()
    lines = _render([kind, kind], 2, prev, [TIME0, TIME0])
    assert old in lines[1]
    lines[1] = lines[1].replace(old, new)
    assert not strict_chain_ok(lines, 2, prev)
    assert cache.check_batch(lines, 2, prev.encode(), _links(lines)) is None


JSON_TEXT = st.text(
    alphabet=st.sampled_from(
        ['"', "\\", "\n", "\x01", "\x7f", "A", "é", "\u2028", "\uff01", "\U0001f600"]
    ),
    max_size=4,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**54), 2**54), JSON_TEXT, st.just(0.5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(JSON_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
#: Byte-level rewrites that keep JSON valid but (usually) not canonical.
REWRITES = [
    (b",", b" ,"),
    (b":", b": "),
    (b"A", b"\\u0041"),
    (b"\\n", b"\\u000a"),
    (b"\\u0001", b"\\u0001".upper()),
    (b"0", b"-0"),
    (b"0", b"0.0"),
    (b"1", b"1e0"),
    (b"{", b'{"a":1,"a":1,'),
    (b"\xc3\xa9", b"\\u00e9"),
    (b"\xc3\xa9", b"\xe9"),
    (b'"', b"'"),
]


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES, st.data())
def test_the_batch_parser_accepts_only_canonical_json(value: Any, data: st.DataObject) -> None:
    try:
        raw = dumps(value)
    except LedgerError:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    old, new = data.draw(st.sampled_from([r for r in REWRITES if r[0] in raw] or [(b"", b"")]))
    if old:
        at = data.draw(st.integers(0, raw.count(old) - 1))
        cut = -1
        for _ in range(at + 1):
            cut = raw.find(old, cut + 1)
        raw = raw[:cut] + new + raw[cut + len(old) :]
    try:
        expected: Any = loads(raw)
        canonical = True
    except LedgerError:
        canonical = False
    parsed = parse_canonical_lines([raw, b'{"k":[1]}'])
    if parsed is not None:
        assert canonical, raw
        assert parsed == [expected, {"k": [1]}]
    elif canonical:
        # Only keys beyond U+FFFF are left to the strict parser.
        assert max(raw.decode(), default="a") > "\uffff", raw


@pytest.mark.parametrize(
    "line",
    [
        b"9007199254740992",
        b"-9007199254740992",
        b'{"a":[1,99999999999999999999]}',
        b"1.0",
        b"1e3",
        b"-0",
        b"NaN",
        b'{"a":1,"a":1}',
        b'{"b":1,"a":1}',
        b'{"a": 1}',
        b'"\\u0041"',
        b'"\\/"',
        b'"\\ud800"',
        b'"\xff"',
        b'"\xed\xa0\x80"',
        b"1,2",
        b"",
        # In UTF-16 order U+1F600 (D83D DE00) sorts before U+FF01; by code point after.
        '{"\uff01":1,"\U0001f600":2}'.encode(),
        '{"\U0001f600":2,"\uff01":1}'.encode(),
    ],
)
def test_the_batch_parser_refuses_or_defers_each_case(line: bytes) -> None:
    assert parse_canonical_lines([b"{}", line]) is None


def test_the_batch_parser_keeps_15_digit_integers_and_defers_longer_ones() -> None:
    parsed = parse_canonical_lines(
        [b"[999999999999999]", b"[-999999999999999]", b'{"a":"\\u001f"}']
    )
    assert parsed == [[10**15 - 1], [-(10**15 - 1)], {"a": "\x1f"}]
    # Sixteen digits may still be safe; the strict parser decides, not this one.
    assert parse_canonical_lines([b"[9007199254740991]"]) is None
    assert parse_canonical_lines([b'{"a":9007199254740991}']) is None
    # Long digit runs inside strings are not numbers and do not defer the batch.
    assert parse_canonical_lines([b'{"d":"sha256:12345678901234567890ab"}']) is not None


def test_a_share_shape_sharing_offsets_with_another_is_returned_alone() -> None:
    # "share.sent" and "share.seen" have the same length: one index entry holds both.
    cache = ShapeCache("alpha")
    fields: dict[str, Any] = {"peer": "beta", "detail": {"share_id": "s"}}
    lines = [
        prepare_entry("alpha", {**fields, "event": event}).render(i, TIME0, None)
        for i, event in enumerate(["share.seen", "share.sent", "share.seen", "share.sent"])
    ]
    _relink(lines, 0)
    confirmed = cache.check_batch(lines, 0, GENESIS_PREV.encode(), _links(lines))
    assert confirmed is not None
    assert [(s["seq"], s["event"]) for s in confirmed[1]] == [(1, "share.sent"), (3, "share.sent")]
    prev = _leaf(lines[-1]).hex()
    again = [
        prepare_entry("alpha", {**fields, "event": event}).render(4 + i, TIME0, None)
        for i, event in enumerate(["share.sent", "share.seen"])
    ]
    again[0] = again[0].replace(GENESIS_PREV.encode(), prev.encode())
    _relink(again, 0)
    confirmed = cache.check_batch(again, 4, prev.encode(), _links(again))
    assert confirmed is not None
    assert [s["seq"] for s in confirmed[1]] == [4]


FIELD_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [None, "", "x" * 129, "ok", "OK", "a.b", "a..b", 0, -1, True, 1.5, [], ["a"], [1], {}, "0" * 64]
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ENTRY_FIELDS)), FIELD_VALUES, st.booleans())
def test_plain_fields_is_a_subset_of_the_schema(name: str, value: Any, drop: bool) -> None:
    fields = dict(loads(prepare_entry("alpha", {"event": "x.y"}).render(0, TIME0, None)))
    assert plain_fields(fields)
    if drop:
        del fields[name]
    else:
        fields[name] = value
    if plain_fields(fields):
        validate_fields(fields)
