"""The member-by-member encoding of an append equals the canonical encoding of the entry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.entry import GENESIS_PREV, encode_entry, parse_entry, prepare_entry
from ledger.errors import EntryError

TEXT = st.text(
    alphabet=st.sampled_from(['"', "\\", "\n", "\x01", "\x7f", "é", "\u2028", "\U0001f600", "a"]),
    max_size=5,
)
OPTIONAL = st.one_of(st.none(), TEXT)
FIELDS = st.fixed_dictionaries(
    {"event": st.sampled_from(["x.y", "share.sent", "rpc.started"])},
    optional={
        "actor": OPTIONAL,
        "peer": OPTIONAL,
        "agreement": OPTIONAL,
        "dataset": OPTIONAL,
        "purpose": OPTIONAL,
        "digest": OPTIONAL,
        "columns": st.one_of(st.none(), st.lists(TEXT, max_size=3)),
        "outcome": st.sampled_from([None, "", "ok", "denied"]),
        "detail": st.one_of(
            st.none(),
            st.dictionaries(
                TEXT,
                st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), TEXT),
                max_size=3,
            ),
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(FIELDS)
def test_prepared_bytes_are_the_canonical_entry(fields: dict[str, Any]) -> None:
    body = prepare_entry("alpha", fields).render(7, 1234, None)
    expected = {
        "v": 1,
        "seq": 7,
        "time": 1234,
        "node": "alpha",
        "event": fields["event"],
        "actor": fields.get("actor"),
        "peer": fields.get("peer"),
        "agreement": fields.get("agreement"),
        "dataset": fields.get("dataset"),
        "columns": fields.get("columns"),
        "purpose": fields.get("purpose"),
        "digest": fields.get("digest"),
        "outcome": fields.get("outcome") or "ok",
        "detail": fields.get("detail") or {},
        "prev": GENESIS_PREV,
        "sensitive": [],
    }
    assert body == encode_entry(expected)
    assert parse_entry(body).fields == expected


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"event": "X"}, "event must be"),
        ({"event": "x", "outcome": "Bad"}, "outcome must be"),
        ({"event": "x", "actor": 1}, "actor must be a string or null"),
        ({"event": "x", "columns": [1]}, "columns must be a list of strings"),
        ({"event": "x", "detail": []}, "detail must be an object"),
        ({"event": "x", "detail": {"f": 1.5}}, "floats"),
        ({"event": "x", "detail": {"n": 2**53}}, "outside"),
        ({"event": "x", "actor": "\ud800"}, "surrogate"),
        ({"event": "x" * 129}, "event must be"),
    ],
)
def test_invalid_fields_are_refused_with_the_exact_message(
    fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(EntryError, match=match):
        prepare_entry("alpha", fields)


def test_an_invalid_node_is_refused() -> None:
    with pytest.raises(EntryError, match="node must be"):
        prepare_entry("", {"event": "x"})
