"""A grammar scan that confirms a batch of common-shape entries without parsing them.

Most entries share one shape: no commitments (``"sensitive":[]``) and a flat
``detail`` (strings, safe integers, booleans, null and lists of those). For
that shape the canonical bytes are fixed by a regular grammar: the members in
their canonical order, strings with only the shortest RFC 8785 escapes,
integers of at most 15 digits (always within +-(2**53-1)), and no whitespace.
:func:`scan_batch` matches each line against that grammar in C and then checks
``seq``, ``node``, ``prev``, name lengths and the ``detail`` objects for the
whole batch in a handful of calls.

Invariant: :func:`scan_batch` accepts a batch only if the strict entry parser
(:func:`ledger.entry.parse_entry`) accepts every line and ``seq``, ``node``,
``prev`` and non-decreasing ``time`` are as expected; anything else returns ``None`` and the caller
re-checks the batch entry by entry, so a rejection here never decides what
is reported. The caller checks that the bytes are UTF-8 (the grammar works on
bytes and lets any byte above 0x7F through inside strings).

Why the grammar is safe: inside a canonical string a quote is always
escaped, so the member names in the pattern can only match real members,
and each ``detail`` matched here is exactly one JSON object. Joining the
batch's details into one array therefore splits them at the same places as
the re-encoding does, and equal bytes mean every detail is canonical (key
order by code point equals UTF-16 order unless a key holds a 4-byte UTF-8
character, and such batches are refused).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Sequence
from typing import Any

from ledger.bundle_format import CROSS_CHECKED_EVENTS
from ledger.canonical import dumps
from ledger.entry import parse_entry
from ledger.errors import LedgerError

__all__ = ["scan_batch"]

_MAX_NAME = 128
_STR = rb'"(?:[^"\\\x00-\x1f]++|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f]))*+"'
_PLAIN_STR = rb'"[^"\\\x00-\x1f]*+"'
_INT = rb"(?:0|-?[1-9][0-9]{0,14})"
_NAT = rb"(0|[1-9][0-9]{0,14})"


def _entry_pattern(string: bytes) -> bytes:
    opt = rb"(?:null|" + string + rb")"
    scalar = rb"(?:" + string + rb"|" + _INT + rb"|null|true|false)"
    value = rb"(?:" + scalar + rb"|\[(?:" + scalar + rb"(?:," + scalar + rb")*+)?\])"
    member = string + rb":" + value
    flat = rb"\{(?:" + member + rb"(?:," + member + rb")*+)?\}"
    return (
        rb'\{"actor":'
        + opt
        + rb',"agreement":'
        + opt
        + rb',"columns":(?:null|\[(?:'
        + string
        + rb"(?:,"
        + string
        + rb')*+)?\]),"dataset":'
        + opt
        + rb',"detail":('
        + flat
        + rb'),"digest":'
        + opt
        + rb',"event":"([a-z][a-z0-9_]*+(?:\.[a-z][a-z0-9_]*+)*+)","node":('
        + string
        + rb'),"outcome":"([a-z][a-z0-9_]*+)","peer":'
        + opt
        + rb',"prev":"([0-9a-f]{64})","purpose":'
        + opt
        + rb',"sensitive":\[\],"seq":'
        + _NAT
        + rb',"time":'
        + _NAT
        + rb',"v":1\}'
    )


#: The exact grammar of a common-shape entry, strings with any canonical escape.
_ENTRY = re.compile(_entry_pattern(_STR))
#: The same grammar for whole lines, strings without escapes: most entries
#: have none, and the simpler string rule is much faster to match. A line
#: with an escape fails here and is matched by :data:`_ENTRY` instead.
_LINES = re.compile(rb"^" + _entry_pattern(_PLAIN_STR) + rb"\n", re.MULTILINE)
_DETAIL_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
)
_FOUR_BYTE = re.compile(rb"[\xf0-\xf4]")
_KEPT_EVENTS = frozenset(e.encode() for e in CROSS_CHECKED_EVENTS)


def node_token(node: str) -> bytes | None:
    """Return the canonical JSON string for ``node``, or None if no entry may carry it."""
    if not isinstance(node, str) or not node or len(node) > _MAX_NAME:
        return None
    try:
        return json.dumps(node, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None


def _odd_row(line: bytes) -> tuple[tuple[bytes | None, ...], dict[str, Any]] | None:
    """Parse a line outside the common shape with the strict parser; None if it fails."""
    try:
        fields = dict(parse_entry(line).fields)
    except LedgerError:
        return None
    row = (
        None,
        fields["event"].encode(),
        dumps(fields["node"]),
        fields["outcome"].encode(),
        fields["prev"].encode(),
        b"%d" % fields["seq"],
        b"%d" % fields["time"],
    )
    return row, fields


def scan_batch(
    lines: Sequence[bytes],
    first_seq: int,
    node: bytes,
    links: Sequence[bytes],
    blob: bytes | None = None,
    min_time: int = 0,
) -> tuple[bytes, list[dict[str, Any]]] | None:
    """Confirm a batch of entries, most of them of the common shape.

    ``node`` is :func:`node_token` of the recording department and ``links``
    the leaf hashes each entry after the first must name as ``prev`` (one
    fewer than ``lines``). ``blob``, when given, is the lines each followed by
    a newline: one pass over it serves a batch without odd lines.
    ``min_time`` is the time of the entry before the batch: entry times
    never decrease. Lines
    outside the common shape go through the strict parser one by one.
    Returns the first entry's ``prev`` (lower-case hex, for the caller to link
    to the batch before) and the parsed ``share.sent``/``share.received``
    entries, or None when any line needs the exact check.
    """
    n = len(lines)
    if not n:
        return b"", []
    rows: list[Any] | None = None
    odd: dict[int, dict[str, Any]] = {}
    if blob is not None:
        # Every match starts at a line start and ends at its newline, so n
        # matches over n lines means every line matched.
        rows = _LINES.findall(blob)
        if len(rows) != n:
            rows = None
    if rows is None:
        rows = []
        for index, match in enumerate(map(_ENTRY.fullmatch, lines)):
            if match is not None:
                rows.append(match.groups())
                continue
            parsed = _odd_row(lines[index])
            if parsed is None:
                return None
            rows.append(parsed[0])
            odd[index] = parsed[1]
    details, events, nodes, outcomes, prevs, seqs, time_texts = zip(*rows, strict=True)
    if list(map(int, seqs)) != list(range(first_seq, first_seq + n)):
        return None
    times = list(map(int, time_texts))
    if times[0] < min_time or sorted(times) != times:
        return None
    if set(nodes) != {node}:
        return None
    if list(prevs[1:]) != list(map(binascii.hexlify, links)):
        return None
    if max(map(len, events)) > _MAX_NAME or max(map(len, outcomes)) > _MAX_NAME:
        return None
    flat = [d for d in details if d is not None] if odd else details
    if flat:
        joined = b"[" + b",".join(flat) + b"]"
        if not joined.isascii() and _FOUR_BYTE.search(joined) is not None:
            return None
        try:
            parsed_details = json.loads(joined)
        except (ValueError, RecursionError):
            return None
        if (
            len(parsed_details) != len(flat)
            or _DETAIL_ENCODER.encode(parsed_details).encode("utf-8") != joined
        ):
            return None
    shares: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if event in _KEPT_EVENTS:
            shares.append(odd[index] if index in odd else json.loads(lines[index]))
    return prevs[0], shares
