"""Bundles built by a dishonest log or witness: each must fail verification.

Each test builds the smallest bundle that shows one property, signed and
cosigned with the federation's real keys, so only the property under test
is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps
from ledger.entry import GENESIS_PREV
from ledger.errors import VerificationError
from ledger.merkle import hash_leaf
from ledger.shapes import parse_canonical_lines
from ledger.verify import verify_bundle
from tests.unit.ledger.helpers import Federation, entry_fields


def _split_lines() -> list[bytes]:
    """Entry 0 and the first half of entry 1 on line 0, the rest of entry 1 on line 1:
    joined with a comma, the two lines read as the two entries."""
    first = dumps(entry_fields(0, GENESIS_PREV, event="share.sent"))
    template = dumps(entry_fields(1, "f" * 64, columns=["a", "b"]))
    cut = template.index(b'["a",') + 4
    line0 = first + b"," + template[:cut]
    second = dumps(entry_fields(1, hash_leaf(line0).hex(), columns=["a", "b"]))
    line1 = second[cut + 1 :]
    assert line0 + b"," + line1 == first + b"," + second
    return [line0, line1]


def test_an_entry_split_across_two_lines_is_refused(federation: Federation, tmp_path: Path) -> None:
    bundle = federation.bundle_of_lines("alpha", _split_lines(), tmp_path / "split")
    with pytest.raises(VerificationError, match="entry seq 0: entry is not canonical JSON"):
        verify_bundle([bundle], ca_pem=federation.ca_pem, require_published=True)


def test_the_batch_parser_refuses_lines_that_are_not_one_value_each() -> None:
    assert parse_canonical_lines(_split_lines()) is None
    assert parse_canonical_lines([b'{"a":1', b'"b":2}']) is None
    assert parse_canonical_lines([b"[1", b"2]"]) is None


JSON_ITEMS = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text('ab,[]{}":', max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab", max_size=2), inner),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(JSON_ITEMS, min_size=1, max_size=5), st.data())
def test_lines_spliced_at_any_comma_parse_only_when_each_line_is_its_own_value(
    values: list[Any], data: st.DataObject
) -> None:
    # The values are joined with commas and cut again at commas of the joined bytes,
    # wherever they are: inside a value, or between two.
    joined = b",".join(dumps(v) for v in values)
    commas = [i for i, byte in enumerate(joined) if byte == ord(",")]
    cuts = sorted(data.draw(st.sets(st.sampled_from(commas), max_size=4)) if commas else [])
    lines = [
        joined[a + 1 if a >= 0 else 0 : b]
        for a, b in zip([-1, *cuts], [*cuts, len(joined)], strict=True)
    ]
    assert b",".join(lines) == joined
    parsed = parse_canonical_lines(lines)
    if parsed is not None:
        assert [dumps(v) for v in parsed] == lines
        assert len(parsed) == len(lines)
    each_is_a_value = True
    for line in lines:
        try:
            if dumps(json.loads(line)) != line:
                each_is_a_value = False
        except ValueError:
            each_is_a_value = False
    assert (parsed is not None) == each_is_a_value
