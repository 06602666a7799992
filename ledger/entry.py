"""Ledger entry format v1: one canonical JSON object per access or decision.

Every entry carries every field, in canonical JSON (RFC 8785, no floats)::

    v         1
    seq       0, 1, 2, ... (the leaf index in the Merkle tree)
    time      Unix time in milliseconds when the entry was sequenced
    node      the recording department
    event     dotted lower-case type, e.g. "share.sent"
    actor, peer, agreement, dataset, purpose, digest     string or null
    columns   list of strings or null
    outcome   "ok", "error", "denied", ... (lower-case word)
    detail    object (free-form, canonical JSON)
    prev      hex leaf hash of entry seq-1; 64 zeros for seq 0
    sensitive sorted list of field paths whose value is a salted commitment

A field path in ``sensitive`` is either a top-level name from
:data:`SENSITIVE_FIELDS` or ``detail.<key>``. Its value in the entry is
``"sha256:" + hex(SHA-256(salt || canonical(value)))``; the salt and value
live outside the entry, so erasing them (crypto-shredding) leaves the entry,
its leaf hash and every proof unchanged.

Invariant: ``encode(parse(b).fields) == b`` for every ``b`` that
:func:`parse_entry` accepts, and the leaf hash is ``SHA-256(0x00 || b)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.canonical import dumps, fast_dumps, loads, plain
from ledger.errors import CanonicalJSONError, EntryError
from ledger.merkle import hash_leaf

__all__ = [
    "ENTRY_FIELDS",
    "ENTRY_VERSION",
    "EVENT_FIELDS",
    "GENESIS_PREV",
    "SENSITIVE_FIELDS",
    "Entry",
    "PreparedEntry",
    "commitment",
    "encode_entry",
    "parse_entry",
    "plain_fields",
    "prepare_entry",
    "validate_fields",
]

ENTRY_VERSION = 1

#: ``prev`` of the first entry: there is no previous leaf.
GENESIS_PREV = "0" * 64

ENTRY_FIELDS = frozenset(
    {
        "v",
        "seq",
        "time",
        "node",
        "event",
        "actor",
        "peer",
        "agreement",
        "dataset",
        "columns",
        "purpose",
        "digest",
        "outcome",
        "detail",
        "prev",
        "sensitive",
    }
)

#: Top-level fields that may be recorded only as a commitment.
SENSITIVE_FIELDS = frozenset(
    {"actor", "peer", "agreement", "dataset", "columns", "purpose", "digest"}
)

#: The fields a recorder supplies; the store fills in the rest.
EVENT_FIELDS = frozenset(
    {
        "event",
        "actor",
        "peer",
        "agreement",
        "dataset",
        "columns",
        "purpose",
        "digest",
        "outcome",
        "detail",
    }
)

_SALT_LEN = 16
_EMPTY_EVENT: dict[str, Any] = dict.fromkeys(sorted(EVENT_FIELDS))

_OPTIONAL_STRINGS = ("actor", "peer", "agreement", "dataset", "purpose", "digest")
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z")
_OUTCOME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}\Z")
_COMMITMENT_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
_MAX_NAME = 128
_encode_str = json.encoder.encode_basestring
_DETAIL_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, check_circular=False
)


def commitment(salt: bytes, value: Any) -> str:
    """Return the commitment ``"sha256:" + hex(SHA-256(salt || canonical(value)))``.

    Raises:
        CanonicalJSONError: ``value`` has no canonical JSON form.
    """
    return "sha256:" + hashlib.sha256(salt + dumps(value)).hexdigest()


def _fail(fields: Mapping[str, Any], message: str) -> EntryError:
    seq = fields.get("seq")
    where = f"entry seq {seq}" if isinstance(seq, int) and not isinstance(seq, bool) else "entry"
    return EntryError(f"{where}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_fields(fields: Mapping[str, Any]) -> None:
    """Check that ``fields`` is a well-formed v1 entry (types, names, formats).

    Raises:
        EntryError: a field is missing, unknown, of the wrong type or malformed,
            or the version is not 1.
    """
    if fields.keys() != ENTRY_FIELDS:
        missing = sorted(ENTRY_FIELDS - fields.keys())
        extra = sorted(fields.keys() - ENTRY_FIELDS)
        if "v" in fields and fields["v"] != ENTRY_VERSION:
            raise _fail(fields, f"unknown entry version {fields['v']!r}, expected 1")
        raise _fail(fields, f"missing fields {missing}, unknown fields {extra}")
    if fields["v"] != ENTRY_VERSION or not _is_int(fields["v"]):
        raise _fail(fields, f"unknown entry version {fields['v']!r}, expected 1")
    for name in ("seq", "time"):
        if not _is_int(fields[name]) or fields[name] < 0:
            raise _fail(fields, f"{name} must be a non-negative integer, got {fields[name]!r}")
    node = fields["node"]
    if not isinstance(node, str) or not node or len(node) > _MAX_NAME:
        raise _fail(fields, f"node must be a department id, got {node!r}")
    event = fields["event"]
    if not isinstance(event, str) or len(event) > _MAX_NAME or not _EVENT_RE.match(event):
        raise _fail(fields, f"event must be a dotted lower-case name, got {event!r}")
    outcome = fields["outcome"]
    if not isinstance(outcome, str) or len(outcome) > _MAX_NAME or not _OUTCOME_RE.match(outcome):
        raise _fail(fields, f"outcome must be a lower-case word, got {outcome!r}")
    prev = fields["prev"]
    if not isinstance(prev, str) or not _HEX64_RE.match(prev):
        raise _fail(fields, f"prev must be 64 lower-case hex digits, got {prev!r}")
    detail = fields["detail"]
    if not isinstance(detail, dict):
        raise _fail(fields, f"detail must be an object, got {type(detail).__name__}")
    sensitive = fields["sensitive"]
    if not isinstance(sensitive, list) or not all(isinstance(s, str) for s in sensitive):
        raise _fail(fields, "sensitive must be a list of field paths")
    if sensitive != sorted(set(sensitive)):
        raise _fail(fields, "sensitive must be sorted and without duplicates")
    marked = set(sensitive)
    for path in sensitive:
        if path in SENSITIVE_FIELDS:
            value = fields[path]
        elif path.startswith("detail.") and path[7:] in detail:
            value = detail[path[7:]]
        else:
            raise _fail(fields, f"sensitive path {path!r} names no field that may be committed")
        if not isinstance(value, str) or not _COMMITMENT_RE.match(value):
            raise _fail(fields, f"sensitive field {path} must hold a sha256: commitment")
    for name in _OPTIONAL_STRINGS:
        value = fields[name]
        if value is not None and not isinstance(value, str):
            raise _fail(fields, f"{name} must be a string or null, got {type(value).__name__}")
    columns = fields["columns"]
    if (
        "columns" not in marked
        and columns is not None
        and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns))
    ):
        raise _fail(fields, "columns must be a list of strings or null")


def plain_fields(fields: dict[str, Any]) -> bool:
    """Return True if ``fields`` is a well-formed v1 entry without commitments.

    A fast subset of :func:`validate_fields` for the verifier: True means
    :func:`validate_fields` accepts the fields; False means "look closer"
    (commitments, or a violation that :func:`validate_fields` names).
    """
    f = fields
    if f.keys() != ENTRY_FIELDS or type(f["v"]) is not int or f["v"] != ENTRY_VERSION:
        return False
    if type(f["sensitive"]) is not list or f["sensitive"]:
        return False
    seq, moment, node, detail = f["seq"], f["time"], f["node"], f["detail"]
    if type(seq) is not int or type(moment) is not int or seq < 0 or moment < 0:
        return False
    if type(node) is not str or not 0 < len(node) <= _MAX_NAME or type(detail) is not dict:
        return False
    event, outcome, prev = f["event"], f["outcome"], f["prev"]
    if type(event) is not str or type(outcome) is not str or type(prev) is not str:
        return False
    if len(event) > _MAX_NAME or len(outcome) > _MAX_NAME:
        return False
    if not _EVENT_RE.match(event) or not _OUTCOME_RE.match(outcome) or not _HEX64_RE.match(prev):
        return False
    for name in _OPTIONAL_STRINGS:
        value = f[name]
        if value is not None and type(value) is not str:
            return False
    columns = f["columns"]
    return columns is None or (type(columns) is list and all(type(c) is str for c in columns))


def encode_entry(fields: Mapping[str, Any]) -> bytes:
    """Validate ``fields`` and return the entry's canonical bytes.

    Raises:
        EntryError: the fields are not a well-formed v1 entry.
    """
    validate_fields(fields)
    try:
        return dumps(dict(fields))
    except CanonicalJSONError as e:
        raise _fail(fields, f"not encodable as canonical JSON: {e}") from e


@dataclass(frozen=True)
class Entry:
    """A parsed entry: its canonical bytes, its fields and its leaf hash."""

    raw: bytes
    fields: Mapping[str, Any]
    leaf: bytes

    @property
    def seq(self) -> int:
        seq: int = self.fields["seq"]
        return seq

    @property
    def event(self) -> str:
        event: str = self.fields["event"]
        return event

    @property
    def prev(self) -> str:
        prev: str = self.fields["prev"]
        return prev


def parse_entry(raw: bytes) -> Entry:
    """Parse one entry from its canonical bytes.

    Raises:
        EntryError: the bytes are not canonical JSON, not an object, or not a
            well-formed v1 entry.
    """
    try:
        fields = loads(raw)
    except (CanonicalJSONError, ValueError) as e:
        # ValueError: an escaped lone surrogate in an object key (``"\\ud800"``)
        # fails the UTF-16 key ordering with UnicodeEncodeError, not a JSON error.
        raise EntryError(f"entry is not canonical JSON: {e}") from e
    if not isinstance(fields, dict):
        raise EntryError(f"entry must be a JSON object, got {type(fields).__name__}")
    validate_fields(fields)
    return Entry(raw=raw, fields=fields, leaf=hash_leaf(raw))


class PreparedEntry:
    """An entry validated and encoded except for ``prev``, ``seq`` and ``time``.

    Those three are known only to the single writer when it sequences the
    entry. Canonical JSON orders keys, so the entry's bytes are ``head``, the
    ``prev`` member, ``middle``, then ``seq``, ``time`` and ``v``: the writer
    only concatenates, and the expensive validation and encoding run in the
    caller's thread. ``secrets`` holds ``(path, salt, canonical value)`` of
    every committed field.
    """

    # A plain slotted class: a frozen dataclass's __init__ costs several
    # microseconds, and one of these is built for every append.
    __slots__ = ("head", "middle", "secrets")

    def __init__(
        self, head: bytes, middle: bytes, secrets: tuple[tuple[str, bytes, bytes], ...]
    ) -> None:
        self.head = head
        self.middle = middle
        self.secrets = secrets

    def render(self, seq: int, time_ms: int, prev: bytes | None) -> bytes:
        """Return the entry bytes for this position in the log."""
        prev_hex = GENESIS_PREV if prev is None else prev.hex()
        return b"".join(
            (
                self.head,
                b'"prev":"',
                prev_hex.encode(),
                b'"',
                self.middle,
                b',"seq":%d,"time":%d,"v":1}' % (seq, time_ms),
            )
        )


def _prepare_plain(node: str, fields: Mapping[str, Any]) -> PreparedEntry | None:
    """Encode an entry without commitments member by member; None means "take the full path".

    This runs for nearly every append. The members are fixed and sorted, so
    the bytes are spliced from each value's own encoding instead of encoding
    a 16-member object with a sorted-keys pass, and only the recorder's
    values are checked (the store's own members are constants). Any value
    that is not plainly valid goes to the full path, which validates it the
    same way as the parser and gives the exact message.
    """
    get = fields.get
    event, outcome, detail, columns = (
        get("event"),
        get("outcome") or "ok",
        get("detail"),
        get("columns"),
    )
    if detail is None:
        detail = {}
    if (
        type(event) is not str
        or type(outcome) is not str
        or type(detail) is not dict
        or type(node) is not str
        or not 0 < len(node) <= _MAX_NAME
        or len(event) > _MAX_NAME
        or len(outcome) > _MAX_NAME
        or not _EVENT_RE.match(event)
        or not _OUTCOME_RE.match(outcome)
    ):
        return None
    if columns is not None and (
        type(columns) is not list or not all(type(c) is str for c in columns)
    ):
        return None
    optional = []
    for name in _OPTIONAL_STRINGS:
        value = get(name)
        if value is not None and type(value) is not str:
            return None
        optional.append(value)
    actor, peer, agreement, dataset, purpose, digest = optional
    if not plain(detail):
        return None
    enc = _encode_str
    try:
        head = "".join(
            (
                '{"actor":',
                "null" if actor is None else enc(actor),
                ',"agreement":',
                "null" if agreement is None else enc(agreement),
                ',"columns":',
                "null" if columns is None else "[" + ",".join(map(enc, columns)) + "]",
                ',"dataset":',
                "null" if dataset is None else enc(dataset),
                ',"detail":',
                _DETAIL_ENCODER.encode(detail),
                ',"digest":',
                "null" if digest is None else enc(digest),
                ',"event":"',
                event,
                '","node":',
                enc(node),
                ',"outcome":"',
                outcome,
                '","peer":',
                "null" if peer is None else enc(peer),
                ",",
            )
        ).encode("utf-8")
        middle = (
            ',"purpose":' + ("null" if purpose is None else enc(purpose)) + ',"sensitive":[]'
        ).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return None
    return PreparedEntry(head=head, middle=middle, secrets=())


_PREV_PLACEHOLDER = b'"prev":"' + GENESIS_PREV.encode() + b'"'
_TAIL_PLACEHOLDER = b',"seq":0,"time":0,"v":1}'


def prepare_entry(
    node: str, fields: Mapping[str, Any], sensitive: Iterable[str] = ()
) -> PreparedEntry:
    """Validate recorder-supplied ``fields`` and encode all but the position.

    Paths in ``sensitive`` (top-level names from :data:`SENSITIVE_FIELDS` or
    ``detail.<key>``) are replaced by fresh salted commitments; a path whose
    value is absent or null is skipped.

    Raises:
        EntryError: an unknown field, a path that may not be committed, or a
            value that does not make a valid v1 entry.
    """
    if not EVENT_FIELDS.issuperset(fields):
        unknown = sorted(map(str, set(fields) - EVENT_FIELDS))
        raise EntryError(f"cannot record unknown entry fields {unknown}")
    # A one-shot iterable is read once; the checks below look at it twice.
    paths = tuple(sensitive) if sensitive else ()
    if paths and not all(type(path) is str for path in paths):
        raise EntryError(f"sensitive field paths must be strings, got {sorted(map(repr, paths))}")
    if not paths:
        fast = _prepare_plain(node, fields)
        if fast is not None:
            return fast
    full: dict[str, Any] = _EMPTY_EVENT.copy()
    full.update(fields)
    raw_detail = full["detail"]
    if raw_detail is None:
        detail: dict[str, Any] = {}
    elif type(raw_detail) is dict or isinstance(raw_detail, Mapping):
        detail = dict(raw_detail)
    else:
        raise EntryError(f"detail must be an object, got {type(raw_detail).__name__}")
    full["outcome"] = full["outcome"] or "ok"
    secrets = []
    marked = []
    for path in sorted(set(paths)):
        if path in SENSITIVE_FIELDS:
            value = full[path]
        elif path.startswith("detail.") and len(path) > 7:
            value = detail.get(path[7:])
        else:
            raise EntryError(f"field {path!r} cannot be recorded as sensitive")
        if value is None:
            continue
        salt = os.urandom(_SALT_LEN)
        try:
            committed = commitment(salt, value)
            encoded = dumps(value)
        except (CanonicalJSONError, ValueError, TypeError) as e:
            raise EntryError(f"sensitive field {path} has no canonical form: {e}") from e
        if path in SENSITIVE_FIELDS:
            full[path] = committed
        else:
            detail[path[7:]] = committed
        secrets.append((path, salt, encoded))
        marked.append(path)
    full["v"] = ENTRY_VERSION
    full["seq"] = 0
    full["time"] = 0
    full["node"] = node
    full["prev"] = GENESIS_PREV
    full["detail"] = detail
    full["sensitive"] = marked
    validate_fields(full)
    # validate_fields has checked every top-level type, so only the free-form
    # detail needs the canonical-JSON screen before the C encoder runs.
    try:
        raw = fast_dumps(full) if plain(detail) else dumps(full)
    except (CanonicalJSONError, ValueError, TypeError) as e:
        # ValueError: a lone surrogate in a detail key fails the UTF-16 key
        # ordering with UnicodeEncodeError. Whatever the value, a caller's bad
        # input must come back as EntryError: the store's writer runs this.
        raise _fail(full, f"not encodable as canonical JSON: {e}") from e
    cut = raw.rfind(_PREV_PLACEHOLDER)
    if cut < 0 or not raw.endswith(_TAIL_PLACEHOLDER):
        raise EntryError("entry encoding lost its prev/seq/time members")
    return PreparedEntry(
        head=raw[:cut],
        middle=raw[cut + len(_PREV_PLACEHOLDER) : -len(_TAIL_PLACEHOLDER)],
        secrets=tuple(secrets),
    )
