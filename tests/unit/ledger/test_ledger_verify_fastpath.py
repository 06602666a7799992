"""The verifier's batch fast path accepts exactly what the strict entry parser accepts."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps, loads
from ledger.entry import ENTRY_FIELDS, GENESIS_PREV, prepare_entry
from ledger.errors import LedgerError, VerificationError
from ledger.verify import _check_run
from tests.unit.ledger.helpers import strict_chain_ok

VALUES = st.sampled_from(
    [
        None,
        "",
        "x" * 200,
        "ok",
        "OK",
        "a.b",
        "a..b",
        0,
        1,
        -1,
        True,
        2**53,
        [],
        ["a"],
        [1],
        {},
        {"k": 1},
        "sha256:" + "0" * 64,
        ["actor"],
        ["detail.k"],
        "0" * 64,
        "alpha",
    ]
)


def _chain(entries: list[dict[str, Any]], relink: bool) -> list[bytes]:
    lines: list[bytes] = []
    prev = GENESIS_PREV
    for fields in entries:
        if relink:
            fields["prev"] = prev
        raw = dumps(fields)
        lines.append(raw)
        prev = hashlib.sha256(b"\0" + raw).hexdigest()
    return lines


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 4),
    st.sampled_from(sorted(ENTRY_FIELDS)),
    VALUES,
    st.booleans(),
)
def test_fast_path_agrees_with_the_parser(index: int, name: str, value: Any, relink: bool) -> None:
    entries = [
        loads(
            prepare_entry("alpha", {"event": "x.y", "detail": {"k": i}}).render(i, 1000 + i, None)
        )
        for i in range(5)
    ]
    _chain(entries, relink=True)
    entries[index][name] = value
    try:
        lines = _chain(entries, relink)
    except LedgerError:
        return
    data = b"".join(line + b"\n" for line in lines)
    state: dict[str, Any] = {}
    try:
        _check_run(data, 0, "alpha", "w", state)
        # The run leaves its own first link to the caller; apply that check here.
        fast_ok = state["first_prev"] == GENESIS_PREV
    except VerificationError:
        fast_ok = False
    assert fast_ok == strict_chain_ok(lines)
