"""Confirm batches of entries by their shape: everything but ``prev``, ``seq`` and ``time``.

Audit logs repeat themselves: most entries are the same RPC records by the
same callers, and differ only in their position (``seq``), their time and
their link (``prev``). An entry's *shape* is its bytes split around those
three values::

    head  = bytes before the top-level '"prev":"'
    mid   = bytes after the 64 hex digits of prev, up to the top-level ',"seq":'
    entry = head + '"prev":"' + <64 hex> + mid + ',"seq":' S ',"time":' T ',"v":1}'

A shape is learned only from an entry that passes the strict checks, recorded
by this cache's node: canonical form (a C parse and re-encode that must give
the same bytes, see :func:`parse_canonical_lines`) and the entry schema
(:func:`ledger.entry.validate_fields`), which is what
:func:`ledger.entry.parse_entry` checks. Any line made of a learned head and
mid, 64 lower-case hex digits and a tail whose ``seq`` and ``time`` are
canonical non-negative integers of at most 15 digits is then the canonical
encoding of that accepted entry with only those three members changed, and so
is accepted by the strict parser too: the members stay in the same order, each
new value is in canonical form, and the types the schema asks for (64
lower-case hex digits; safe non-negative integers) hold.

Why the split finds the top-level members: ``,"seq":`` is searched only in a
line's last 60 bytes, and in a valid entry nothing after the top-level
``seq`` can hold it. Inside a JSON string every ``"`` is escaped, so the
bytes ``"prev":"`` can only be a key and the start of its string value;
after the top-level ``prev`` come only ``purpose`` (a string or null),
``sensitive`` (a list of strings) and integers, none of which can hold a
key, so the last ``"prev":"`` before ``seq`` is the top-level one.

The offsets index (``(len(head), offset of seq)`` -> shape) lets most lines be
compared in place with ``bytes.startswith`` instead of copying their head;
two shapes at the same offsets make that index entry ambiguous, and their
lines are then looked up by their exact ``(head, mid)``.

Invariant: :meth:`ShapeCache.check_batch` accepts a batch only if the strict
path would accept every entry in it (canonical form, schema, ``seq`` equal to
the line index, the recording node, ``prev`` equal to the given links, and
``time`` never below the entry before it);
anything else returns ``None`` and the caller re-checks the batch on the
strict path, which decides what is reported.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Sequence
from itertools import compress, repeat
from operator import add, and_, itemgetter, not_
from typing import Any

from ledger.bundle_format import CROSS_CHECKED_EVENTS
from ledger.entry import plain_fields, validate_fields
from ledger.errors import LedgerError

__all__ = ["ShapeCache", "parse_canonical_lines"]

#: Longest possible tail: ',"seq":' + 16 digits + ',"time":' + 16 digits + ',"v":1}' is 54 bytes.
_TAIL_WINDOW = 60
_SEQ_KEY = b',"seq":'
_PREV_KEY = b'"prev":"'
_HEX_START = len(_PREV_KEY)
_HEX_END = _HEX_START + 64
#: At most 15 digits: always below 2**53 - 1, so no range check is needed.
_TAIL = re.compile(rb',"seq":(0|[1-9][0-9]{0,14}),"time":(0|[1-9][0-9]{0,14}),"v":1\}\n')
_HEX64 = re.compile(rb"[0-9a-f]{64}")
#: A number token of 16 or more digits: without whitespace every number follows
#: ":", "," or "[", so none is missed; a match inside a string only sends the
#: lines to the strict parser. Up to 15 digits is always within +-(2**53 - 1),
#: which spares the parser a Python call for every integer.
_LONG_NUMBER = re.compile(rb"[:,\[]-?[0-9]{16,}[,}\]]")
_FOUR_BYTE = re.compile(rb"[\xf0-\xf4]")
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
)
#: Shapes kept per node before the cache starts over (bounded memory for logs of
#: unique entries, such as share records with their unique ids).
_MAX_SHAPES = 1 << 14
#: A batch with more new shapes than this fraction of its lines goes to the strict path,
#: and the next few batches skip the shape check (a log of unique entries gains nothing).
_MISS_DIVISOR = 4
_MISS_SLACK = 16
_SKIP_AFTER_MISS = 8

_slice_of = bytes.__getitem__
#: A shape group in the offset index: its heads, its one mid (as a 1-tuple, for
#: bytes.startswith), and whether any of them is a share event.
_Indexed = tuple[tuple[bytes, ...], tuple[bytes, ...], bool]
#: Empty tuples make bytes.startswith False whatever the line holds.
_NO_SHAPE: _Indexed = ((), (), False)
_HEADS = itemgetter(0)
_MIDS = itemgetter(1)
_SHARE = itemgetter(2)
#: Heads per index entry: bytes.startswith tries them in turn.
_MAX_HEADS = 16


class ShapeCache:
    """Learned entry shapes of one node's log, and the batch check that uses them."""

    def __init__(self, node: str) -> None:
        self.node = node
        # (head, mid) -> True for share events (whose fields the caller needs), else False.
        self._shapes: dict[tuple[bytes, bytes], bool] = {}
        # (offset of prev, offset of seq) -> the shapes at those offsets, or _NO_SHAPE.
        self._by_length: dict[tuple[int, int], _Indexed] = {}
        self._skip = 0

    def check_batch(
        self,
        lines: Sequence[bytes],
        first_seq: int,
        first_prev: bytes | None,
        links: bytes,
        min_time: int = 0,
    ) -> tuple[str, list[dict[str, Any]]] | None:
        """Confirm a batch of entries, or return None to ask for the strict path.

        ``lines`` are entries ``first_seq, first_seq + 1, ...``; ``links`` the
        concatenated 32-byte leaf hashes that entries after the first must
        name as ``prev``; ``first_prev`` the lower-case hex the first entry
        must name, or None when the caller links it (it is then returned);
        ``min_time`` the time of the entry before the batch (entry times
        never decrease, so none of the batch's may be smaller).
        Returns the first entry's ``prev`` and the parsed
        entries the verifier cross-checks (:data:`~ledger.bundle_format.CROSS_CHECKED_EVENTS`).
        """
        n = len(lines)
        if not n or self._skip:
            self._skip = max(self._skip - 1, 0)
            return None
        seqs = list(map(bytes.rfind, lines, repeat(_SEQ_KEY), repeat(-_TAIL_WINDOW)))
        if -1 in seqs:
            return None
        tails = b"\n".join(map(_slice_of, lines, map(slice, seqs, repeat(None)))) + b"\n"
        # Each tail starts at the last ',"seq":' of its line and holds no newline, so n
        # matches, each ending at a newline, cover every tail whole.
        numbers = _TAIL.findall(tails)
        if len(numbers) != n:
            return None
        seq_texts, time_texts = zip(*numbers, strict=True)
        if b"\n".join(seq_texts) != _seq_text(first_seq, n):
            return None
        times = list(map(int, time_texts))
        if times[0] < min_time or sorted(times) != times:
            return None
        prevs = list(map(bytes.rfind, lines, repeat(_PREV_KEY), repeat(0), seqs))
        if -1 in prevs:
            return None
        hex_starts = list(map(add, prevs, repeat(_HEX_START)))
        hex_ends = list(map(add, prevs, repeat(_HEX_END)))
        hexes = b"".join(map(_slice_of, lines, map(slice, hex_starts, hex_ends)))
        if len(hexes) != 64 * n or hexes[64:] != binascii.hexlify(links):
            return None
        head_prev = hexes[:64]
        if first_prev is not None and head_prev != first_prev:
            return None
        if _HEX64.fullmatch(head_prev) is None:
            return None
        if len(self._shapes) > _MAX_SHAPES:
            self._shapes.clear()
            self._by_length.clear()
        # Most lines are confirmed without copying their head: the shape indexed by
        # the line's (prev, seq) offsets is compared in place with startswith.
        candidates = list(
            map(self._by_length.get, zip(prevs, seqs, strict=True), repeat(_NO_SHAPE))
        )
        hits = list(
            map(
                and_,
                map(bytes.startswith, lines, map(_HEADS, candidates)),
                map(bytes.startswith, lines, map(_MIDS, candidates), hex_ends),
            )
        )
        flags: list[bool | None] = list(map(_SHARE, candidates))
        learned: dict[int, dict[str, Any]] = {}
        if False in hits:
            # The rest are looked up by their exact (head, mid); a new shape is checked
            # strictly on its first line and then confirms its other lines.
            unknown: dict[tuple[bytes, bytes], int] = {}
            keys: dict[int, tuple[bytes, bytes]] = {}
            for i in compress(range(n), map(not_, hits)):
                line, p = lines[i], prevs[i]
                key = keys[i] = (line[:p], line[p + _HEX_END : seqs[i]])
                flags[i] = self._shapes.get(key)
                if flags[i] is None:
                    unknown.setdefault(key, i)
            if len(unknown) > n // _MISS_DIVISOR + _MISS_SLACK:
                self._skip = _SKIP_AFTER_MISS
                return None
            first_lines = sorted(unknown.values())
            parsed = parse_canonical_lines([lines[i] for i in first_lines])
            if parsed is None:
                return None
            for i, fields in zip(first_lines, parsed, strict=True):
                prev = hexes[64 * i : 64 * i + 64]
                if not self._learn(lines[i], fields, first_seq + i, prev, keys[i]):
                    return None
                learned[i] = fields
            for i, key in keys.items():
                flags[i] = self._shapes[key]
        shares: list[dict[str, Any]] = []
        if True in flags:
            # A flag means the line's shape, or another in its index entry, is a share.
            for i, flag in enumerate(flags):
                if flag:
                    fields = learned[i] if i in learned else json.loads(lines[i])
                    if fields["event"] in CROSS_CHECKED_EVENTS:
                        shares.append(fields)
        return head_prev.decode("ascii"), shares

    def _learn(
        self, raw: bytes, fields: Any, seq: int, prev: bytes, key: tuple[bytes, bytes]
    ) -> bool:
        """Check one parsed canonical line against the schema; learn its shape if it passes."""
        if type(fields) is not dict:
            return False
        if not plain_fields(fields):
            try:
                validate_fields(fields)
            except LedgerError:
                return False
        if fields["seq"] != seq or fields["node"] != self.node or fields["prev"] != prev.decode():
            return False
        head, mid = key
        # The key was cut from this line; it must put it back together exactly.
        if head + _PREV_KEY + prev + mid != raw[: raw.rfind(_SEQ_KEY, -_TAIL_WINDOW)]:
            return False
        share = fields["event"] in CROSS_CHECKED_EVENTS
        self._shapes[key] = share
        where = (len(head), len(head) + _HEX_END + len(mid))
        # Shapes at the same offsets share an index entry when they share their
        # mid: a line then matches one of the heads, and each (head, mid) pair
        # was learned. Shapes with another mid make the entry ambiguous, and
        # their lines always take the exact lookup.
        heads, mids, shares = self._by_length.get(where, ((), (mid,), False))
        if mids != (mid,):
            self._by_length[where] = _NO_SHAPE
        elif head not in heads and len(heads) < _MAX_HEADS:
            self._by_length[where] = ((*heads, head), mids, shares or share)
        return True


def parse_canonical_lines(lines: list[bytes]) -> list[Any] | None:
    """Parse lines that are each canonical JSON, or return None ("look closer").

    The C parser reads them as one array and the C encoder writes each
    element back: each element must give exactly its own line, so equal
    bytes prove every line canonical and one value. (Comparing only the
    whole array would let an element straddle two lines: the comma that
    joins the lines can be the comma inside a value.) Re-encoding drops whitespace,
    duplicate keys, non-shortest escapes and "-0", so each of them changes
    the bytes; floats are refused while parsing, and integers of 16 or more
    digits (possibly beyond +-(2**53-1)) before it; invalid UTF-8 and lone
    surrogates fail to decode or encode. Keys sort by code point here and by
    UTF-16 code units in RFC 8785, which agree below U+10000, so lines with a
    4-byte UTF-8 character are left to the strict parser.
    """
    joined = b"[" + b",".join(lines) + b"]"
    if not joined.isascii() and _FOUR_BYTE.search(joined) is not None:
        return None
    if _LONG_NUMBER.search(joined) is not None:
        return None
    try:
        parsed = json.loads(joined, parse_float=_refuse, parse_constant=_refuse)
        if type(parsed) is not list or len(parsed) != len(lines):
            return None
        same = list(map(str.encode, map(_ENCODER.encode, parsed))) == lines
    except (ValueError, UnicodeError, RecursionError):
        return None
    return parsed if same else None


def _refuse(text: str) -> Any:
    raise ValueError(f"{text} is not allowed")


def _seq_text(first: int, n: int) -> bytes:
    return "\n".join(map(str, range(first, first + n))).encode("ascii")
