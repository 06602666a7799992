"""The grammar scan accepts a batch only when the strict parser accepts every entry."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps, loads
from ledger.entry import GENESIS_PREV, prepare_entry
from ledger.errors import LedgerError, VerificationError
from ledger.scan import node_token, scan_batch
from ledger.verify import _check_run
from tests.unit.ledger.helpers import strict_chain_ok

TEXT = st.text(
    alphabet=st.sampled_from(['"', "\\", "\n", "\x01", "\x7f", "é", "\u2028", "\U0001f600", "a"]),
    max_size=6,
)
DETAIL_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**54), 2**54),
    TEXT,
    st.lists(TEXT, max_size=2),
    st.dictionaries(TEXT, st.integers(0, 3), max_size=2),
)


def _entries(details: list[dict[str, Any]], actor: str | None) -> list[dict[str, Any]]:
    return [
        loads(
            prepare_entry("alpha", {"event": "x.y", "actor": actor, "detail": d}).render(
                i, 1000 + i, None
            )
        )
        for i, d in enumerate(details)
    ]


def _chain(entries: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    lines, leaves = [], []
    prev = GENESIS_PREV
    for fields in entries:
        fields["prev"] = prev
        raw = dumps(fields)
        leaf = hashlib.sha256(b"\0" + raw).digest()
        lines.append(raw)
        leaves.append(leaf)
        prev = leaf.hex()
    return lines, leaves


def _scan(lines: list[bytes], leaves: list[bytes], blob: bool) -> bool:
    token = node_token("alpha")
    assert token is not None
    data = b"".join(line + b"\n" for line in lines) if blob else None
    return scan_batch(lines, 0, token, leaves[:-1], data) is not None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(TEXT, DETAIL_VALUES, max_size=3), min_size=1, max_size=4),
    st.one_of(st.none(), TEXT),
    st.booleans(),
)
def test_scan_accepts_valid_entries_of_any_content(
    details: list[dict[str, Any]], actor: str | None, blob: bool
) -> None:
    try:
        entries = _entries(details, actor)
    except LedgerError:
        return
    lines, leaves = _chain(entries)
    assert strict_chain_ok(lines)
    # Four-byte characters in a detail are left to the exact path (UTF-16 key order).
    astral = any(max(dumps(d).decode(), default="a") > "\uffff" for d in details)
    assert _scan(lines, leaves, blob) or astral


MUTATIONS = [
    (b'"v":1}', b'"v":2}'),
    (b'"seq":1,', b'"seq":01,'),
    (b'"seq":1,', b'"seq":2,'),
    (b'"node":"alpha"', b'"node":"beta"'),
    (b'"detail":{"a":1', b'"detail":{"a":1.0'),
    (b'"detail":{"a":1', b'"detail":{"a":1,"a":1'),
    (b'"detail":{"a":1', b'"detail":{"b":0,"a":1'),
    (b'"detail":{"a":1', b'"detail":{"a":9007199254740992'),
    (b'"detail":{"a":1', b'"detail":{"a":-0'),
    (b'"actor":"x"', b'"actor":"\\u0041"'),
    (b'"actor":"x"', b'"actor":"\\/"'),
    (b'"actor":"x"', b'"actor":"\x01"'),
    (b'"actor":"x"', b'"actor": "x"'),
    (b'"event":"x.y"', b'"event":"X.y"'),
    (b'"outcome":"ok"', b'"outcome":"' + b"o" * 129 + b'"'),
    (b'"sensitive":[]', b'"sensitive":["actor"]'),
    (b'"time":1001', b'"time":-1'),
    (b'"columns":null', b'"columns":[1]'),
]


@pytest.mark.parametrize(("old", "new"), MUTATIONS)
@pytest.mark.parametrize("blob", [True, False])
def test_scan_refuses_what_the_parser_refuses(old: bytes, new: bytes, blob: bool) -> None:
    entries = _entries([{"a": 1}, {"a": 1}, {"a": 1}], "x")
    lines, leaves = _chain(entries)
    assert _scan(lines, leaves, blob)
    assert old in lines[1], old
    lines[1] = lines[1].replace(old, new)
    # Re-link the entries after the mutated one, so only the mutation is wrong.
    lines[2] = lines[2].replace(
        leaves[1].hex().encode(), hashlib.sha256(b"\0" + lines[1]).hexdigest().encode()
    )
    leaves[1] = hashlib.sha256(b"\0" + lines[1]).digest()
    assert not strict_chain_ok(lines)
    assert not _scan(lines, leaves, blob)


def test_scan_refuses_a_broken_chain() -> None:
    entries = _entries([{}, {}, {}], None)
    lines, leaves = _chain(entries)
    assert not _scan(lines, [leaves[0], leaves[0], leaves[2]], True)


def test_scan_returns_share_entries_and_the_first_link() -> None:
    entries = _entries([{}, {"receipt": {"nested": [1]}}, {}], None)
    entries[1]["event"] = "share.sent"
    entries[2]["event"] = "share.received"
    lines, leaves = _chain(entries)
    token = node_token("alpha")
    assert token is not None
    scanned = scan_batch(lines, 0, token, leaves[:-1])
    assert scanned is not None
    first, shares = scanned
    assert first == GENESIS_PREV.encode()
    assert [s["seq"] for s in shares] == [1, 2]


def test_the_verifier_refuses_bytes_that_are_not_utf8() -> None:
    # The scan leaves UTF-8 to its caller: the run must still be refused.
    entries = _entries([{"a": 1}, {"a": 1}], "x")
    lines, _ = _chain(entries)
    lines[1] = lines[1].replace(b'"actor":"x"', b'"actor":"\xff"')
    data = b"".join(line + b"\n" for line in lines)
    with pytest.raises(VerificationError, match=r"entry seq 1: .*UTF-8"):
        _check_run(data, 0, "alpha", "w", {})
