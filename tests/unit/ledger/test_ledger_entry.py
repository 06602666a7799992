"""Entry format v1: encoding, strict parsing, commitments."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import dumps
from ledger.entry import GENESIS_PREV, parse_entry, prepare_entry
from ledger.errors import EntryError


def _entry(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": 1,
        "seq": 0,
        "time": 1,
        "node": "alpha",
        "event": "share.sent",
        "actor": None,
        "peer": "beta",
        "agreement": "agr-1",
        "dataset": "people",
        "columns": ["age"],
        "purpose": None,
        "digest": "sha256:" + "a" * 64,
        "outcome": "ok",
        "detail": {},
        "prev": GENESIS_PREV,
        "sensitive": [],
    }
    fields.update(changes)
    return fields


def test_prepared_entry_renders_what_parse_accepts() -> None:
    prepared = prepare_entry(
        "alpha", {"event": "a.b", "actor": "x", "detail": {"prev": GENESIS_PREV}}, {"actor"}
    )
    raw = prepared.render(42, 1234, b"\x07" * 32)
    entry = parse_entry(raw)
    assert entry.seq == 42
    assert entry.fields["time"] == 1234
    assert entry.prev == "07" * 32
    assert entry.fields["detail"] == {"prev": GENESIS_PREV}
    assert entry.fields["actor"].startswith("sha256:")
    assert prepared.secrets[0][0] == "actor"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "unknown entry version 2"),
        ({"seq": -1}, "seq must be a non-negative integer"),
        ({"seq": True}, "seq must be a non-negative integer"),
        ({"node": ""}, "node must be a department id"),
        ({"event": "Share"}, "event must be a dotted"),
        ({"outcome": "OK"}, "outcome must be a lower-case word"),
        ({"prev": "00"}, "prev must be 64"),
        ({"detail": []}, "detail must be an object"),
        ({"sensitive": ["peer", "actor"]}, "sorted"),
        ({"sensitive": ["actor"]}, "must hold a sha256: commitment"),
        ({"sensitive": ["event"]}, "names no field"),
        ({"columns": [1]}, "columns must be a list of strings"),
        ({"digest": 5}, "digest must be a string or null"),
    ],
)
def test_invalid_entries(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        parse_entry(dumps(_entry(**changes)))


def test_missing_and_extra_fields() -> None:
    fields = _entry()
    del fields["purpose"]
    fields["extra"] = 1
    with pytest.raises(
        EntryError, match=r"missing fields \['purpose'\], unknown fields \['extra'\]"
    ):
        parse_entry(dumps(fields))


def test_non_canonical_bytes_are_refused() -> None:
    raw = dumps(_entry())
    with pytest.raises(EntryError, match="not canonical"):
        parse_entry(raw.replace(b'"v":1', b'"v": 1'))
    with pytest.raises(EntryError, match="JSON object"):
        parse_entry(b"[1]")


@given(st.binary(max_size=400))
def test_parser_raises_only_entry_errors(data: bytes) -> None:
    with contextlib.suppress(EntryError):
        parse_entry(data)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_any_detail_round_trips(detail: dict[str, Any]) -> None:
    raw = prepare_entry("alpha", {"event": "x.y", "detail": detail}).render(3, 9, None)
    assert parse_entry(raw).fields["detail"] == detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"\\ud800":1,"a":2}',
        b'{"\\udc80":1}',
        dumps(_entry())[:-1].replace(b'"detail":{}', b'"detail":{"\\ud800":1}') + b"}",
    ],
)
def test_an_escaped_lone_surrogate_key_is_an_entry_error(raw: bytes) -> None:
    with pytest.raises(EntryError, match="not canonical JSON"):
        parse_entry(raw)


def test_prepare_refuses_bad_values_with_entry_errors_only() -> None:
    with pytest.raises(EntryError, match="not encodable"):
        prepare_entry("alpha", {"event": "x.y", "detail": {"\udc80": 1}})
    with pytest.raises(EntryError, match="no canonical form"):
        prepare_entry("alpha", {"event": "x.y", "detail": {"a": {"\udc80": 1}}}, ["detail.a"])
    with pytest.raises(EntryError, match="must be strings"):
        prepare_entry("alpha", {"event": "x.y"}, [None])  # type: ignore[list-item]
    with pytest.raises(EntryError, match="unknown entry fields"):
        prepare_entry("alpha", {"event": "x.y", 3: "x"})  # type: ignore[dict-item]


def test_prepare_reads_a_one_shot_iterable_of_paths_once() -> None:
    prepared = prepare_entry("alpha", {"event": "x.y", "actor": "bob"}, iter(["actor"]))
    fields = parse_entry(prepared.render(0, 1, None)).fields
    assert fields["sensitive"] == ["actor"]
    assert fields["actor"].startswith("sha256:")
