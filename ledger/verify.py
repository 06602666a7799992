"""The offline auditor: verify one or more ledger bundles with nothing but their bytes.

For each bundle, in this order, the first violation raises
:class:`~ledger.errors.VerificationError` naming the bundle, the entry seq or
checkpoint size, and what is wrong:

1. the manifest (format version, origin, size, increasing checkpoint sizes);
2. the federation directory (and its CA signature when a CA is given);
3. every entry: canonical JSON (each line one entry), a well-formed v1 entry,
   ``seq`` dense from 0, the recording node, ``prev`` equal to the previous
   entry's leaf hash, and ``time`` not below the previous entry's;
4. every checkpoint: the log's Ed25519 signature (key from the directory), the
   Merkle root recomputed from the entries, at least ``witness_threshold``
   valid cosignatures from the directory's witnesses, and the consistency
   proof from the previous checkpoint.

The hash chain and the Merkle roots are both checked over the whole range;
neither stands in for the other. Given several bundles, they are then checked
against each other:

* every share: each ``share.sent`` needs a matching ``share.received`` (same
  digest, agreement, dataset, columns, purpose, rows and chunks) in the
  recipient's bundle and a receipt signed by the recipient, and each
  ``share.received`` needs its ``share.sent``. A share the other bundle could
  not yet hold (it ends before the share completed) or whose receipt the
  consumer recorded as never acknowledged is reported, not failed;
* every checkpoint a witness cosigned (its ``witness.cosigned`` entries) must
  be the root of that many entries of the witnessed log's bundle: a log cut
  back, or rewritten after it was witnessed, fails here even when its own
  bundle leaves the checkpoints out.

A log is a department's origin *and* the key that signs it: a department that
enrolled again under a new key starts a new log from seq 0. Each bundle's log
is checked under the key its own (CA-signed) directory names, so the log of a
previous key stays verifiable; two bundles of one department under different
keys are two logs, under one key a second bundle is refused. A witness's claim
or a share's receipt is checked under the key that signed it when a CA-checked
directory names that key for the department, and is matched to that log's
bundle. Those directories are the bundles' and the directory files the
auditor gives (key history: checked under the same CA, of the same
federation, and never a laxer witness policy than the newest directory's). A
receipt under a key the department had replaced fails when the provider
recorded it after the department's log under the later key began.

Trust comes from the CA certificate the auditor passes; without one, each
bundle's own ``ca.pem`` is used, the bundles must all carry the same one, and
the report says the CA was not the auditor's.

Speed: each batch of entries goes down a ladder of checks, each of which
accepts a batch only if the strict parser would accept every entry in it, and
otherwise hands it to the next: the learned entry shapes (:mod:`ledger.shapes`:
everything but ``prev``, ``seq`` and ``time`` compared in place), the exact
grammar of a common-shape entry (:mod:`ledger.scan`), one C parse and
re-encode of the batch, and finally the entry-by-entry walk, which names the
first bad entry. Every entry is checked, and the hash chain and the leaf
hashes are computed from the bytes of every line.

Large logs are checked by forked worker processes, each taking ranges of whole
runs of ``_CHUNK`` entries (a power of two, so each run's Merkle subtrees are
aligned in the whole tree and a worker returns its run's tree levels, not
only its leaves). The parent links the ranges' chains, joins their levels and
builds the levels above them; it reads results in seq order, so the first
violation it raises is the first in the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import operator
import os
import re
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.bundle_format import (
    BUNDLE_TYPE,
    BUNDLE_VERSION,
    CROSS_CHECKED_EVENTS,
    checkpoint_name,
)
from ledger.canonical import dumps, loads
from ledger.checkpoint import (
    COSIGNATURE_TYPE,
    ED25519_TYPE,
    cosignatures,
    key_id,
    parse_note,
    parse_signature_line,
    verify_checkpoint,
)
from ledger.directory import DirectoryView, parse_directory
from ledger.entry import ENTRY_FIELDS, GENESIS_PREV, parse_entry, plain_fields, validate_fields
from ledger.errors import CheckpointError, EntryError, LedgerError, ProofError, VerificationError
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, hash_children, verify_consistency
from ledger.scan import node_token, scan_batch
from ledger.shapes import ShapeCache, parse_canonical_lines

__all__ = ["BundleReport", "DirectoryFileError", "DirectoryReport", "Report", "verify_bundle"]

_BATCH = 4096
#: Lines per run. A power of two keeps each run's subtrees aligned in the whole tree
#: (a run then returns its own tree levels); any other value still works, with
#: the levels above the run's largest power-of-two factor built after the runs.
_CHUNK = 4096
_PARALLEL_MIN = 50_000
_MAX_WORKERS = 8
_RANGES_PER_WORKER = 8
#: A share the provider's bundle lacks is "not yet covered" when that bundle ends
#: this close to the consumer's entry (milliseconds, as entry times are): the
#: receipt's deadline and clock skew between departments.
_COVERAGE_SLACK_MS = 60_000
_LAST_TIME = re.compile(rb',"time":(0|[1-9][0-9]{0,15}),"v":1\}\n?$')
#: The unbound digest method of a SHA-256 object, for map().
_DIGEST: Any = type(hashlib.sha256()).digest
_NONE = type(None)
_MAX_NAME = 128
_STR_OR_NONE = {str, _NONE}
_GET_SEQ = operator.itemgetter("seq")
_GET_V = operator.itemgetter("v")
_GET_NODE = operator.itemgetter("node")
_GET_PREV = operator.itemgetter("prev")
_GET_SENSITIVE = operator.itemgetter("sensitive")
_GET_TIME = operator.itemgetter("time")
_GET_DETAIL = operator.itemgetter("detail")
_GET_EVENT = operator.itemgetter("event")
_GET_OUTCOME = operator.itemgetter("outcome")
_GET_COLUMNS = operator.itemgetter("columns")
_GET_OPTIONAL = tuple(
    operator.itemgetter(name)
    for name in ("actor", "peer", "agreement", "dataset", "purpose", "digest")
)
#: Newline-terminated event names and outcomes, matched for a whole batch at once.
_EVENTS_RE = re.compile(r"(?:[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\n)*")
_OUTCOMES_RE = re.compile(r"(?:[a-z][a-z0-9_]*\n)*")


@dataclass
class BundleReport:
    """What was verified in one bundle."""

    path: Path
    origin: str
    node: str
    entries: int
    checkpoints: list[int]
    published_size: int
    root: bytes
    tail: int
    directory_signature_checked: bool
    #: Entries covered by checkpoints other bundles' witnesses cosigned (0 if none given).
    witnessed_size: int = 0
    #: The serial and witness threshold of the directory this bundle carries.
    directory_serial: int = 0
    directory_threshold: int = 0


@dataclass(frozen=True)
class DirectoryReport:
    """A directory file given beside the bundles, checked under the CA and used as key history."""

    path: Path
    federation: str
    serial: int
    witness_threshold: int


@dataclass
class Report:
    """The result of a successful verification."""

    bundles: list[BundleReport]
    #: The directory files given beside the bundles, in the order given.
    directories: list[DirectoryReport] = field(default_factory=list)
    shares_checked: int = 0
    shares_unmatched_peers: int = 0
    #: Checkpoints in witnesses' bundles checked against the witnessed log's entries.
    witnessed_checked: int = 0
    #: The directories were checked against the bundles' own ca.pem, not a CA the caller gave.
    ca_from_bundle: bool = False
    #: The witness policy applied to every bundle: the newest directory among the
    #: bundles' and the directory files'.
    policy_serial: int = 0
    policy_threshold: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(b.entries for b in self.bundles)


class DirectoryFileError(VerificationError):
    """A directory file given beside the bundles is unreadable, malformed, not signed
    by the trusted CA, of another federation, or contradicts another directory."""


class _Files:
    """Read named files from a bundle directory or zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
                raise VerificationError(f"{path}: not a bundle directory or zip: {e}") from e
        elif not path.is_dir():
            raise VerificationError(f"{path}: no such bundle")

    def read(self, name: str) -> bytes | None:
        try:
            if self._zip is not None:
                try:
                    return self._zip.read(name)
                except KeyError:
                    return None
            target = self.path / name
            return target.read_bytes() if target.is_file() else None
        except (
            OSError,
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            RuntimeError,
            NotImplementedError,
            ValueError,
        ) as e:
            # A damaged deflate stream surfaces as zlib.error or EOFError, not BadZipFile;
            # an entry flagged as encrypted as RuntimeError, an unknown compression
            # method as NotImplementedError, and a bad header field as ValueError.
            raise VerificationError(f"{self.path}: cannot read {name}: {e}") from e

    def local(self, name: str) -> Path | None:
        """Return the path of ``name`` in a bundle directory (None in a zip or if absent)."""
        if self._zip is not None:
            return None
        target = self.path / name
        return target if target.is_file() else None

    def require(self, name: str) -> bytes:
        data = self.read(name)
        if data is None:
            raise VerificationError(f"{self.path}: bundle has no {name}")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@dataclass
class _Bundle:
    files: _Files
    manifest: dict[str, Any]
    directory: DirectoryView
    count: int
    #: Every level of complete aligned subtrees, leaves first, each as 32-byte hashes end to end.
    levels: list[bytes]
    shares_sent: dict[str, tuple[int, dict[str, Any]]]
    shares_received: dict[str, tuple[int, dict[str, Any]]]
    #: share_ids whose receipt the provider never acknowledged (``share.receipt_failed``).
    receipts_failed: set[str]
    #: ``(seq, fields)`` of each ``witness.cosigned`` entry.
    cosigned: list[tuple[int, dict[str, Any]]]
    #: ``time`` of the last entry, the largest (times never decrease; 0 for an empty log).
    last_time: int
    #: SHA-256 of the CA certificate the directory was checked against (b"" if none).
    ca_digest: bytes
    #: ``(size, note)`` of each listed checkpoint, checked against the bundle's directory.
    notes: list[tuple[int, bytes]] = field(default_factory=list)
    #: The CA certificate the directory was checked against (None if none).
    ca_pem: bytes | None = None
    #: ``time`` of the first entry, when the log began (None for an empty log).
    first_time: int | None = None

    @property
    def log(self) -> tuple[str, bytes]:
        """The log this bundle holds: its origin and the raw key its own directory
        names for its department (checked to exist by :func:`_check_checkpoints`)."""
        return (
            self.manifest["origin"],
            self.directory.keys[self.manifest["node"]].public_bytes_raw(),
        )


def _fail(where: str, message: str, cause: BaseException | None = None) -> VerificationError:
    error = VerificationError(f"{where}: {message}")
    error.__cause__ = cause
    return error


def _manifest(files: _Files) -> dict[str, Any]:
    where = f"{files.path}: manifest.json"
    raw = files.require("manifest.json")
    try:
        manifest = loads(raw.rstrip(b"\n"))
    except LedgerError as e:
        raise _fail(where, f"not canonical JSON: {e}", e) from e
    if not isinstance(manifest, dict):
        raise _fail(where, "must be a JSON object")
    if manifest.get("type") != BUNDLE_TYPE or manifest.get("v") != BUNDLE_VERSION:
        raise _fail(
            where,
            f"unknown bundle format {manifest.get('type')!r} v{manifest.get('v')!r}, "
            f"expected {BUNDLE_TYPE} v{BUNDLE_VERSION}",
        )
    for name, kind in (("origin", str), ("node", str), ("federation", str), ("size", int)):
        if not isinstance(manifest.get(name), kind):
            raise _fail(where, f"field {name!r} must be {kind.__name__}")
    sizes = manifest.get("checkpoints")
    if not isinstance(sizes, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in sizes
    ):
        raise _fail(where, "checkpoints must be a list of sizes")
    for a, b in pairwise(sizes):
        if b <= a:
            raise _fail(where, f"checkpoint sizes are not increasing ({a} then {b})")
    return manifest


def _check_entry_slow(raw: bytes, seq: int, where: str) -> dict[str, Any]:
    try:
        entry = parse_entry(raw)
    except EntryError as e:
        raise _fail(
            f"{where}: entry seq {seq}", str(e).removeprefix(f"entry seq {seq}: "), e
        ) from e
    return dict(entry.fields)


def _parse_batch(lines: list[bytes], first_seq: int, where: str) -> list[dict[str, Any]]:
    parsed = parse_canonical_lines(lines)
    if parsed is not None:
        return parsed
    return [_check_entry_slow(raw, first_seq + i, where) for i, raw in enumerate(lines)]


def _check_fields(
    fields: dict[str, Any], seq: int, node: str, prev: Any, where: str, min_time: int
) -> None:
    # The common shape is checked inline; anything unusual (sensitive fields,
    # unexpected types) goes through the full validator for a precise message.
    if not plain_fields(fields):
        try:
            validate_fields(fields)
        except EntryError as e:
            raise _fail(f"{where}: entry seq {seq}", str(e).split(": ", 1)[-1], e) from e
    if fields["seq"] != seq:
        raise _fail(f"{where}: entry seq {seq}", f"seq is {fields['seq']}, expected {seq}")
    if fields["node"] != node:
        raise _fail(
            f"{where}: entry seq {seq}", f"recorded by {fields['node']!r}, expected {node!r}"
        )
    if fields["prev"] != prev:
        raise _fail(
            f"{where}: entry seq {seq}",
            _link_error(seq, fields["prev"], prev),
        )
    if fields["time"] < min_time:
        raise _fail(f"{where}: entry seq {seq}", _time_error(seq, fields["time"], min_time))


def _time_error(seq: int, found: int, before: int) -> str:
    return (
        f"time {found} is before the time of entry seq {seq - 1} ({before}): "
        "entry times never decrease"
    )


def _pair_up(level: bytes) -> bytes:
    """Return the next level up: the parent of each complete pair of 32-byte hashes."""
    sha = hashlib.sha256
    pairs = len(level) // (2 * HASH_SIZE) * (2 * HASH_SIZE)
    step = 2 * HASH_SIZE
    return b"".join([sha(b"\x01" + level[i : i + step]).digest() for i in range(0, pairs, step)])


def _local_levels(leaves: list[bytes], depth: int) -> list[bytes]:
    """Return levels 0..``depth`` of the complete subtrees within one run of leaves.

    A run starts at a multiple of ``2**depth`` leaves, so its subtrees are
    aligned subtrees of the whole tree and runs' levels join end to end.
    """
    sha = hashlib.sha256
    digest = _DIGEST
    levels = [b"".join(leaves)]
    level = leaves
    for _ in range(depth):
        if len(level) < 2:
            levels.append(b"")
            continue
        pairs = iter(level)
        # map() keeps the per-node work in C: prefix, hash, digest.
        level = list(map(digest, map(sha, map(b"\x01".__add__, map(bytes.__add__, pairs, pairs)))))
        levels.append(b"".join(level))
    return levels


def _concat_levels(parts: list[list[bytes]]) -> list[bytes]:
    """Join the local levels of consecutive aligned runs, level by level."""
    if not parts:
        return [b""]
    return [b"".join(run[j] for run in parts) for j in range(len(parts[0]))]


def _complete_levels(levels: list[bytes]) -> list[bytes]:
    """Build the levels above the runs' own, up to the root."""
    levels = list(levels)
    while len(levels[-1]) > HASH_SIZE:
        levels.append(_pair_up(levels[-1]))
    return levels


def _root_at(levels: list[bytes], size: int) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    parts = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            index = (start >> level) * HASH_SIZE
            parts.append(levels[level][index : index + HASH_SIZE])
            start += 1 << level
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = hash_children(h, acc)
    return acc


#: A checked range: its local tree levels (leaves first), its first ``prev``, its share
#: entries, the violation found in it (None when there is none), and the times of its
#: first entry (None if unreadable) and its last.
_RangeResult = tuple[list[bytes], str | None, list[dict[str, Any]], str | None, int | None, int]

#: What worker processes read: the bundle's entries.jsonl (its bytes, or its
#: path in a bundle directory, from which each worker reads its own ranges),
#: node and name. Set in the parent just before the workers are forked, so
#: nothing is pickled for them and they only read these pages (no copy-on-write).
_SHARED: tuple[bytes | Path, str, str] | None = None
#: Each worker process keeps the shapes it has learned across the ranges it checks.
_WORKER_SHAPES: dict[str, ShapeCache] = {}


def _link_error(seq: int, first_prev: str, expected: str) -> str:
    if seq:
        # The chain breaks here when either entry changed: say so, since the
        # altered one is as likely to be the earlier entry as this one.
        return (
            f"prev {first_prev} is not the leaf hash of entry seq {seq - 1} ({expected}): "
            f"entry {seq - 1} or {seq} was altered"
        )
    return f"prev {first_prev} is not the genesis value"


def _check_range(
    lines: list[bytes], first_seq: int, node: str, where: str, shapes: ShapeCache
) -> _RangeResult:
    """Check consecutive runs of ``_CHUNK`` entries, returning a violation instead of raising it.

    ``first_seq`` is a multiple of ``_CHUNK``, so each run's subtrees are
    aligned in the whole tree and its local levels join end to end. The
    caller must compare the range's first ``prev`` and first time with the
    range before it before it reports an error from inside the range, so
    errors stay in seq order.
    """
    depth = (_CHUNK & -_CHUNK).bit_length() - 1
    parts: list[list[bytes]] = []
    kept: list[dict[str, Any]] = []
    head: str | None = None
    first_time = _line_time(lines[0]) if lines else None
    last_time = 0
    for start in range(0, len(lines), _CHUNK):
        state: dict[str, Any] = {"first_prev": None, "last_time": last_time}
        try:
            leaves, shares, _ = _check_run(
                b"",
                first_seq + start,
                node,
                where,
                state,
                lines[start : start + _CHUNK],
                shapes,
                min_time=last_time,
            )
        except VerificationError as e:
            error: str | None = str(e)
        else:
            error = None
        first_prev = state["first_prev"]
        if start == 0:
            head = first_prev
        elif first_prev is not None:
            expected = parts[-1][0][-HASH_SIZE:].hex()
            if first_prev != expected:
                message = _link_error(first_seq + start, first_prev, expected)
                return (
                    _concat_levels(parts),
                    head,
                    kept,
                    f"{where}: entry seq {first_seq + start}: {message}",
                    first_time,
                    last_time,
                )
        if error is not None:
            return _concat_levels(parts), head, kept, error, first_time, last_time
        parts.append(_local_levels(leaves, depth))
        kept.extend(shares)
        last_time = state["last_time"]
    return _concat_levels(parts), head, kept, None, first_time, last_time


def _line_time(line: bytes) -> int | None:
    """The ``time`` of an entry line, read from its last members (None if it has none)."""
    match = _LAST_TIME.search(line)
    return int(match[1]) if match else None


def _check_shared_range(task: tuple[int, int, int]) -> _RangeResult:
    """Worker process: check the entries in bytes ``start:end`` of the shared entries.jsonl."""
    assert _SHARED is not None, "worker started without the shared entries"
    source, node, where = _SHARED
    start, end, first_seq = task
    lines = _read_range(source, start, end, where).split(b"\n")[:-1]
    shapes = _WORKER_SHAPES.setdefault(node, ShapeCache(node))
    return _check_range(lines, first_seq, node, where, shapes)


def _batch_ok(
    parsed: list[Any], seq0: int, node: str, leaves: list[bytes], start: int, min_time: int
) -> bool:
    """Check a whole batch of parsed entries at C speed; False means "look closer".

    Each member is gathered across the batch with ``map``/``itemgetter`` and
    checked in one comparison, instead of a Python loop per entry. Any
    surprise (a commitment, an odd type, a broken link) returns False, and
    the caller re-checks entry by entry for the exact message. ``leaves`` are
    the run's leaf hashes and ``start`` the batch's index within the run; the
    first entry of a run is linked by the caller. ``min_time`` is the time of
    the entry before the batch: times never decrease.
    """
    n = len(parsed)
    if not n:
        return True
    try:
        if set(map(type, parsed)) != {dict}:
            return False
        if not all(map(operator.eq, map(dict.keys, parsed), repeat(ENTRY_FIELDS))):
            return False
        seqs = list(map(_GET_SEQ, parsed))
        if seqs != list(range(seq0, seq0 + n)) or set(map(type, seqs)) != {int}:
            return False
        versions = list(map(_GET_V, parsed))
        if set(versions) != {1} or set(map(type, versions)) != {int}:
            return False
        if set(map(_GET_NODE, parsed)) != {node}:
            return False
        links = list(map(_GET_PREV, parsed))
        expected = [leaf.hex() for leaf in leaves[max(start - 1, 0) : start + n - 1]]
        if (links if start else links[1:]) != expected:
            return False
        if any(map(_GET_SENSITIVE, parsed)) or set(map(type, map(_GET_SENSITIVE, parsed))) != {
            list
        }:
            return False
        times = list(map(_GET_TIME, parsed))
        if set(map(type, times)) != {int} or times[0] < min_time or sorted(times) != times:
            return False
        if set(map(type, map(_GET_DETAIL, parsed))) != {dict}:
            return False
        for getter, pattern in ((_GET_EVENT, _EVENTS_RE), (_GET_OUTCOME, _OUTCOMES_RE)):
            values = list(map(getter, parsed))
            if set(map(type, values)) != {str}:
                return False
            text = "\n".join(values) + "\n"
            if text.count("\n") != n or not pattern.fullmatch(text):
                return False
            if max(map(len, values)) > _MAX_NAME:
                return False
        for getter in _GET_OPTIONAL:
            if not set(map(type, map(getter, parsed))) <= _STR_OR_NONE:
                return False
        columns = list(map(_GET_COLUMNS, parsed))
        if not set(map(type, columns)) <= {list, _NONE}:
            return False
        listed = itertools.chain.from_iterable(c for c in columns if c is not None)
        return set(map(type, listed)) <= {str}
    except (KeyError, TypeError, ValueError):
        return False


def _check_run(
    data: bytes,
    first_seq: int,
    node: str,
    where: str,
    state: dict[str, Any],
    lines: list[bytes] | None = None,
    shapes: ShapeCache | None = None,
    *,
    min_time: int = 0,
) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """Check a run of entries (each line ending in a newline) starting at ``first_seq``.

    Returns the leaf hashes, the share entries and the count, and puts the
    first entry's ``prev`` (its link to the run before) and the last entry's
    time in ``state``. ``min_time`` is the time of the entry before the run
    (0 when the caller compares the run's first time itself): entry times
    never decrease.
    ``lines``, when the caller has them, are ``data`` split at its newlines;
    ``shapes`` carries learned entry shapes from run to run.

    Each batch is tried first by its shapes (:mod:`ledger.shapes`), then by
    the grammar scan (:mod:`ledger.scan`), then by the C JSON parser, and
    finally entry by entry; every step accepts only what the strict parser
    accepts, and the last one names the first violation.

    Raises:
        VerificationError: the first bad entry of the run.
    """
    if lines is None:
        lines = data.split(b"\n")[:-1]
    if shapes is None:
        shapes = ShapeCache(node)
    sha = hashlib.sha256
    leaves = [sha(b"\x00" + line).digest() for line in lines]
    kept: list[dict[str, Any]] = []
    token: bytes | None = None
    utf8: bool | None = None
    # The time of the entry before the batch; each check below accepts a batch only
    # if its times do not decrease from it, and then the last line holds the new one.
    last_time = min_time
    for start in range(0, len(lines), _BATCH):
        batch = lines[start : start + _BATCH]
        if start:
            last_time = _line_time(lines[start - 1]) or 0
        confirmed = shapes.check_batch(
            batch,
            first_seq + start,
            leaves[start - 1].hex().encode() if start else None,
            b"".join(leaves[start : start + len(batch) - 1]),
            last_time,
        )
        if confirmed is not None:
            if start == 0:
                state["first_prev"] = confirmed[0]
            kept.extend(confirmed[1])
            continue
        if utf8 is None:
            # The grammar scan leaves UTF-8 to its caller; checked once, when first needed.
            utf8 = all(_is_utf8(line) for line in lines)
            token = node_token(node) if utf8 else None
        if token is not None:
            # The grammar scan confirms common-shape batches without parsing them.
            scanned = scan_batch(
                batch,
                first_seq + start,
                token,
                leaves[start : start + len(batch) - 1],
                b"".join(line + b"\n" for line in batch) if len(batch) == len(lines) else None,
                last_time,
            )
            if scanned is not None:
                if start == 0:
                    state["first_prev"] = scanned[0].decode()
                kept.extend(scanned[1])
                continue
        parsed = _parse_batch(batch, first_seq + start, where)
        if start == 0 and parsed and type(parsed[0]) is dict:
            state["first_prev"] = str(parsed[0].get("prev"))
        if _batch_ok(parsed, first_seq + start, node, leaves, start, last_time):
            kept.extend(f for f in parsed if f["event"] in CROSS_CHECKED_EVENTS)
            continue
        # Something in this batch is off: walk it entry by entry to name the first violation.
        for i, fields in enumerate(parsed):
            index = start + i
            seq = first_seq + index
            if type(fields) is not dict:
                raise _fail(f"{where}: entry seq {seq}", "is not a JSON object")
            if index == 0:
                state["first_prev"] = str(fields.get("prev"))
                _check_fields(fields, seq, node, fields.get("prev"), where, last_time)
            else:
                _check_fields(fields, seq, node, leaves[index - 1].hex(), where, last_time)
            last_time = fields["time"]
            if fields["event"] in CROSS_CHECKED_EVENTS:
                kept.append(fields)
    if lines:
        state["last_time"] = _line_time(lines[-1]) or 0
    return leaves, kept, len(lines)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _load_entries(
    files: _Files, manifest: dict[str, Any]
) -> tuple[int, list[bytes], list[dict[str, Any]], int | None, int]:
    """Check every entry; return the count, the tree levels, the cross-checked
    entries, and the first entry's time (None for an empty log) and the last's."""
    where = str(files.path)
    node = manifest["node"]
    # The manifest's size only picks the strategy; the entries are counted below.
    size = manifest["size"]
    path = files.local("entries.jsonl")
    source: bytes | Path
    if path is not None and _parallel(size):
        # Workers read their own ranges from the file while this process is
        # still counting lines to cut the next ones.
        source = path
        last = _last_byte(path, where)
    else:
        source = files.require("entries.jsonl")
        last = source[-1:]
    if last and last != b"\n":
        raise _fail(f"{where}: entries.jsonl", "does not end with a newline (truncated?)")
    parts, kept, first_time, last_time = _check_ranges(source, node, where, size)
    count = sum(len(levels[0]) for levels in parts) // HASH_SIZE
    if count != size:
        raise _fail(
            f"{where}: entries.jsonl",
            f"holds {count} entries, the manifest says {size}",
        )
    return count, _complete_levels(_concat_levels(parts)), kept, first_time, last_time


def _parallel(size: int) -> bool:
    workers = min(os.cpu_count() or 1, _MAX_WORKERS)
    return size >= _PARALLEL_MIN and workers > 1 and "fork" in get_all_start_methods()


def _last_byte(path: Path, where: str) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return b""
            f.seek(-1, os.SEEK_END)
            return f.read(1)
    except OSError as e:
        raise VerificationError(f"{where}: cannot read entries.jsonl: {e}") from e


def _read_range(source: bytes | Path, start: int, end: int, where: str) -> bytes:
    if isinstance(source, bytes):
        return source[start:end]
    try:
        with source.open("rb") as f:
            f.seek(start)
            return f.read(end - start)
    except OSError as e:
        raise VerificationError(f"{where}: cannot read entries.jsonl: {e}") from e


#: Bytes read at a time while cutting a bundle's entries into ranges; one buffer
#: is reused, so cutting costs one copy of the entries and no page faults.
_CUT_BLOCK = 4 * 1024 * 1024
_NEWLINE = re.compile(b"\n")


def _file_ranges(source: bytes | Path, pieces: int, where: str) -> Iterator[tuple[int, int, int]]:
    """Cut entries.jsonl into about ``pieces`` ranges of whole runs: (start, end, first seq).

    Each cut moves forward to the next line whose index is a multiple of
    ``_CHUNK``, so each range's subtrees are aligned in the whole tree. The
    file (or the bytes read from a zip) is read block by block into one
    reused buffer, so the first ranges are checked while the rest are read.
    The workers read their own ranges; if the file changes between those
    reads and this one, their lines no longer line up with the cuts, which
    fails verification.

    Raises:
        VerificationError: the file cannot be read.
    """
    file: BinaryIO
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    except OSError as e:
        raise VerificationError(f"{where}: cannot read entries.jsonl: {e}") from e
    with file:
        size = len(source) if isinstance(source, bytes) else os.fstat(file.fileno()).st_size
        cuts = [size * k // pieces for k in range(1, pieces)]
        buffer = bytearray(_CUT_BLOCK)
        view = memoryview(buffer)
        start = start_line = 0
        offset = before = 0  # file offset of the buffer, and newlines before it
        target: int | None = None  # the line index the next range starts at
        while True:
            try:
                got = file.readinto(view)
            except OSError as e:
                raise VerificationError(f"{where}: cannot read entries.jsonl: {e}") from e
            if not got:
                break
            here = buffer.count(b"\n", 0, got)
            # Newlines before ``mark`` in this block number ``counted`` in the file.
            mark, counted = 0, before
            while True:
                if target is None:
                    if not cuts or cuts[0] >= offset + got:
                        break
                    # A cut passed while the previous range's end was pending counts from here.
                    mark = max(cuts.pop(0) - offset, 0)
                    counted = before + buffer.count(b"\n", 0, mark)
                    # The next run start after the cut: its line begins after the mark.
                    target = (counted // _CHUNK + 1) * _CHUNK
                    if target <= start_line:
                        target = None
                        continue
                if before + here < target:
                    break  # the newline ending line target - 1 is in a later block
                # The (target - counted)-th newline from the mark, found in C.
                found = _NEWLINE.finditer(buffer, mark, got)
                pos = next(itertools.islice(found, target - counted - 1, None)).start()
                yield start, offset + pos + 1, start_line
                start, start_line, target = offset + pos + 1, target, None
                mark, counted = pos + 1, start_line
            before += here
            offset += got
    if start < offset or start == 0:
        yield start, offset, start_line


def _check_ranges(
    source: bytes | Path, node: str, where: str, size: int
) -> tuple[list[list[bytes]], list[dict[str, Any]], int | None, int]:
    """Check entries.jsonl range by range, in worker processes for a large log.

    Returns each range's tree levels, the share entries, the first entry's
    time (None for no entries) and the last entry's (the largest: times never
    decrease).

    Raises:
        VerificationError: the first bad entry.
    """
    global _SHARED  # noqa: PLW0603 -- read by forked workers, see _SHARED
    workers = min(os.cpu_count() or 1, _MAX_WORKERS)
    parallel = _parallel(size)
    pool: ProcessPoolExecutor | None = None
    parts: list[list[bytes]] = []
    kept: list[dict[str, Any]] = []
    log_first_time: int | None = None
    last_time = 0
    try:
        ranges: list[tuple[int, int, int]] = []
        results: Iterator[_RangeResult]
        if parallel:
            # Entry checks are pure CPU; processes sidestep the GIL. Forked
            # workers inherit the file's bytes, so a task is three integers and
            # a result is the range's tree levels as a few byte strings.
            # Several ranges per worker even out the load when a core is busy
            # with something else. Results are read in seq order, so the first
            # error raised is the first violation.
            _SHARED = (source, node, where)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
            futures = []
            for task in _file_ranges(source, workers * _RANGES_PER_WORKER, where):
                ranges.append(task)
                futures.append(pool.submit(_check_shared_range, task))
            results = (future.result() for future in futures)
        else:
            whole = source if isinstance(source, bytes) else source.read_bytes()
            ranges.append((0, len(whole), 0))
            lines = whole.split(b"\n")[:-1]
            results = iter([_check_range(lines, 0, node, where, ShapeCache(node))])
        for (_, _, first_seq), (levels, first_prev, shares, error, first_time, end_time) in zip(
            ranges, results, strict=True
        ):
            expected = GENESIS_PREV if first_seq == 0 else parts[-1][0][-HASH_SIZE:].hex()
            if first_prev is not None and first_prev != expected:
                raise _fail(
                    f"{where}: entry seq {first_seq}", _link_error(first_seq, first_prev, expected)
                )
            # Each range checks its own times; where two ranges meet is checked here.
            if first_time is not None and first_time < last_time:
                raise _fail(
                    f"{where}: entry seq {first_seq}", _time_error(first_seq, first_time, last_time)
                )
            if error is not None:
                raise VerificationError(error)
            parts.append(levels)
            kept.extend(shares)
            if first_seq == 0:
                log_first_time = first_time
            last_time = end_time
    finally:
        _SHARED = None
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return parts, kept, log_first_time, last_time


def _check_checkpoints(bundle: _Bundle) -> tuple[int, bytes]:
    files, manifest, directory = bundle.files, bundle.manifest, bundle.directory
    where = str(files.path)
    node, origin = manifest["node"], manifest["origin"]
    log_key = directory.keys.get(node)
    if log_key is None:
        raise _fail(where, f"department {node!r} is not in the federation directory")
    witnesses = directory.witness_keys(exclude=node)
    proofs = _proofs(files)
    previous: tuple[int, bytes] | None = None
    for size in manifest["checkpoints"]:
        cp_where = f"{where}: checkpoint size {size}"
        note = files.read(checkpoint_name(size))
        if note is None:
            raise _fail(cp_where, "is listed in the manifest but missing from the bundle")
        try:
            checkpoint = verify_checkpoint(note, origin, log_key)
        except CheckpointError as e:
            # Name the directory: a log exported with a directory that names a later
            # key of its department (it enrolled again) fails here, not as a forgery.
            raise _fail(
                cp_where, f"{e}, the key directory serial {directory.serial} names for {node}", e
            ) from e
        if checkpoint.size != size:
            raise _fail(cp_where, f"note is for size {checkpoint.size}")
        if size > bundle.count:
            raise _fail(cp_where, f"covers more entries than the bundle holds ({bundle.count})")
        root = _root_at(bundle.levels, size)
        if checkpoint.root != root:
            raise _fail(
                cp_where,
                f"root {checkpoint.root.hex()} does not match the root of entries 0..{size - 1} "
                f"({root.hex()})",
            )
        try:
            valid = cosignatures(parse_note(note), witnesses)
        except CheckpointError as e:
            raise _fail(cp_where, str(e), e) from e
        if len(valid) < directory.witness_threshold:
            raise _fail(
                cp_where,
                f"has {len(valid)} valid witness cosignature(s), the federation requires "
                f"{directory.witness_threshold}",
            )
        if previous is not None and previous[0] > 0:
            proof = proofs.get((previous[0], size))
            if proof is None:
                raise _fail(cp_where, f"no consistency proof from size {previous[0]}")
            try:
                verify_consistency(previous[0], size, proof, previous[1], checkpoint.root)
            except ProofError as e:
                raise _fail(cp_where, f"consistency with size {previous[0]}: {e}", e) from e
        previous = (size, checkpoint.root)
        bundle.notes.append((size, note))
    return previous if previous is not None else (0, EMPTY_ROOT)


def _published_under(bundle: _Bundle, policy: DirectoryView) -> int:
    """The largest listed checkpoint size that ``policy``'s witnesses cosigned at least
    ``policy.witness_threshold`` times (0 if none).

    A bundle is checked against the directory it carries; an older directory may
    have asked for fewer witnesses, or other ones, than the newest one the auditor
    holds, so whether a checkpoint is published is decided by the newest.
    """
    witnesses = policy.witness_keys(exclude=bundle.manifest["node"])
    published = 0
    for size, note in bundle.notes:
        try:
            valid = cosignatures(parse_note(note), witnesses)
        except CheckpointError as e:
            raise _fail(f"{bundle.files.path}: checkpoint size {size}", str(e), e) from e
        if len(valid) >= policy.witness_threshold:
            published = size
    return published


def _policy(
    bundles: list[_Bundle], files: Sequence[tuple[Path, DirectoryView]] = ()
) -> DirectoryView:
    """The newest directory among the bundles and the directory ``files``; two
    different directories with one serial fail.

    A directory file older than the newest adds key history only: its witness
    threshold and witnesses never replace the newest directory's.

    Raises:
        VerificationError: two bundles carry different directories with the same serial.
        DirectoryFileError: a directory file differs from another directory (a
            bundle's or a file's) with the same serial.
    """
    sources: list[tuple[str, DirectoryView, bool]] = [
        (f"{b.files.path}: directory.json", b.directory, False) for b in bundles
    ]
    sources += [(str(path), directory, True) for path, directory in files]
    newest = max((directory for _, directory, _ in sources), key=lambda d: d.serial)
    # Per serial: where it was first seen, whether that was a file, and its terms.
    first: dict[int, tuple[str, bool, tuple[object, ...]]] = {}
    for where, other, is_file in sources:
        terms = _directory_terms(other)
        seen_where, seen_file, seen_terms = first.setdefault(other.serial, (where, is_file, terms))
        if seen_terms == terms:
            continue
        other_side = f"directory file {seen_where}" if seen_file else "another bundle's directory"
        error = DirectoryFileError if is_file else VerificationError
        raise error(
            f"{where}: serial {other.serial} differs from {other_side} with the same "
            "serial; one of them is not the federation's"
        )
    return newest


def _directory_terms(directory: DirectoryView) -> tuple[object, ...]:
    keys = sorted((dept, key.public_bytes_raw()) for dept, key in directory.keys.items())
    return (directory.witness_threshold, sorted(directory.witnesses), keys)


def _proofs(files: _Files) -> dict[tuple[int, int], list[bytes]]:
    where = f"{files.path}: proofs.json"
    raw = files.read("proofs.json")
    if raw is None:
        return {}
    try:
        doc = loads(raw.rstrip(b"\n"))
        result = {}
        for item in doc["consistency"]:
            result[(int(item["from"]), int(item["to"]))] = [
                base64.b64decode(h, validate=True) for h in item["proof"]
            ]
    except (LedgerError, KeyError, TypeError, ValueError, binascii.Error) as e:
        raise _fail(where, f"malformed: {e}", e) from e
    return result


def _load(path: Path, ca_pem: bytes | None) -> _Bundle:
    files = _Files(path)
    manifest = _manifest(files)
    trusted = ca_pem if ca_pem is not None else files.read("ca.pem")
    try:
        directory = parse_directory(files.require("directory.json"), trusted)
    except LedgerError as e:
        raise _fail(f"{path}: directory.json", str(e), e) from e
    if directory.federation != manifest["federation"]:
        raise _fail(str(path), f"directory is for federation {directory.federation!r}")
    if manifest["origin"] != directory.origin(manifest["node"]):
        raise _fail(
            str(path),
            f"origin {manifest['origin']!r} is not {directory.origin(manifest['node'])!r}",
        )
    count, levels, kept, first_time, last_time = _load_entries(files, manifest)
    sent: dict[str, tuple[int, dict[str, Any]]] = {}
    received: dict[str, tuple[int, dict[str, Any]]] = {}
    receipts_failed: set[str] = set()
    cosigned: list[tuple[int, dict[str, Any]]] = []
    for fields in kept:
        detail = fields["detail"]
        event = fields["event"]
        if event == "witness.cosigned":
            if fields["outcome"] == "ok":
                cosigned.append((fields["seq"], fields))
            continue
        share_id = detail.get("share_id")
        if event == "share.receipt_failed":
            if isinstance(share_id, str):
                receipts_failed.add(share_id)
            continue
        if fields["outcome"] != "ok" or not isinstance(share_id, str):
            continue
        target = sent if fields["event"] == "share.sent" else received
        if share_id in target:
            raise _fail(
                f"{path}: entry seq {fields['seq']}",
                f"share {share_id} is recorded twice (first at seq {target[share_id][0]})",
            )
        target[share_id] = (fields["seq"], fields)
    ca_digest = _ca_digest(trusted) if trusted else b""
    return _Bundle(
        files,
        manifest,
        directory,
        count,
        levels,
        sent,
        received,
        receipts_failed,
        cosigned,
        last_time,
        ca_digest,
        ca_pem=trusted,
        first_time=first_time,
    )


def _ca_digest(pem: bytes) -> bytes:
    """SHA-256 of the CA certificate's DER, so PEM line endings or comments do not count."""
    try:
        return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    except ValueError:
        # The directory check above accepted it; compare the bytes as given.
        return hashlib.sha256(pem).digest()


def _check_receipt(
    sender: _Bundle,
    seq: int,
    sent: dict[str, Any],
    recipient: str,
    directory: DirectoryView,
    named: Sequence[Ed25519PublicKey] = (),
) -> bytes:
    """Check the receipt of a ``share.sent``; return the raw key that signed it.

    The receipt verifies under the recipient's key in ``directory`` or one of
    ``named`` (the keys CA-checked directories among the bundles name for it:
    a receipt signed before the recipient enrolled again is under its key then).

    Raises:
        VerificationError: the receipt is missing, not signed by the recipient,
            or does not match the entry.
    """
    where = f"{sender.files.path}: entry seq {seq}"
    detail = sent["detail"]
    signed = detail.get("receipt")
    if not isinstance(signed, dict) or not isinstance(signed.get("receipt"), dict):
        raise _fail(where, f"share {detail.get('share_id')} carries no signed receipt")
    receipt = signed["receipt"]
    current = directory.keys.get(recipient)
    keys = [current] if current is not None else []
    keys += [k for k in named if current is None or k != current]
    if not keys:
        raise _fail(where, f"recipient {recipient!r} is not in the federation directory")
    signer: bytes | None = None
    error: BaseException | None = None
    try:
        signature = base64.b64decode(signed.get("signature", ""), validate=True)
        message = dumps(receipt)
    except (binascii.Error, TypeError, ValueError, LedgerError) as e:
        error = e
    else:
        for key in keys:
            try:
                key.verify(signature, message)
            except InvalidSignature as e:
                error = e
                continue
            signer = key.public_bytes_raw()
            break
    if signer is None:
        raise _fail(
            where,
            f"receipt for share {detail.get('share_id')} is not signed by {recipient} under "
            f"any of its {len(keys)} key(s) the bundles' directories and directory files "
            f"name (if {recipient} enrolled again since, add a bundle carrying a directory "
            "that names its earlier key, or give that directory file)",
            error,
        )
    expected = {
        "v": 1,
        "type": "fednode.receipt",
        "share_id": detail.get("share_id"),
        "digest": sent["digest"],
        "rows": detail.get("rows"),
        "chunks": detail.get("chunks"),
        "sender": sent["node"],
        "recipient": recipient,
        "agreement": sent["agreement"],
    }
    for name, value in expected.items():
        if receipt.get(name) != value:
            raise _fail(
                where,
                f"receipt field {name} is {receipt.get(name)!r}, the entry says {value!r}",
            )
    return signer


def _cross_check(
    bundles: list[_Bundle],
    directory: DirectoryView,
    report: Report,
    *,
    strict: bool,
    named: dict[str, list[Ed25519PublicKey]],
    serials: dict[tuple[str, bytes], int],
) -> None:
    """Check every share against the other side's bundle; with ``strict``, a share the
    other bundle does not hold yet fails instead of being noted. ``named`` are the
    keys CA-checked directories name per department (:func:`_named_keys`), and
    ``serials`` the newest serial naming each (:func:`_last_serials`)."""
    # A department enrolled again has a bundle per log, one per key.
    by_node: dict[str, list[_Bundle]] = {}
    for bundle in bundles:
        by_node.setdefault(bundle.manifest["node"], []).append(bundle)
    for bundle in bundles:
        node = bundle.manifest["node"]
        for share_id, (seq, sent) in bundle.shares_sent.items():
            peer = sent["peer"]
            where = f"{bundle.files.path}: entry seq {seq}"
            signer = _check_receipt(bundle, seq, sent, peer, directory, named.get(peer, ()))
            _check_not_replaced(by_node.get(peer, ()), peer, signer, sent, serials, where)
            # The recipient's log is the one under the key that signed the receipt.
            other = next((b for b in by_node.get(peer, ()) if b.log[1] == signer), None)
            if other is None:
                report.shares_unmatched_peers += 1
                continue
            match = other.shares_received.get(share_id)
            if match is None:
                # The recipient records share.received before it signs the receipt,
                # both on its own clock: a bundle ending no later than the receipt
                # may predate the entry. The receipt's time is the recipient's word,
                # so the provider's own clock bounds it.
                if not strict and other.last_time <= min(
                    _receipt_time(sent), sent["time"] + _COVERAGE_SLACK_MS
                ):
                    report.notes.append(
                        f"share {share_id} from {node} to {peer} (seq {seq}) is not yet covered: "
                        f"{peer}'s bundle ends before it completed; export it again to check it"
                    )
                    continue
                raise _fail(
                    where, f"share {share_id} sent to {peer} has no share.received in its ledger"
                )
            rseq, received = match
            for name in ("digest", "agreement", "dataset", "columns", "purpose"):
                if received[name] != sent[name]:
                    raise _fail(
                        where,
                        f"share {share_id}: {name} {sent[name]!r} differs from {peer}'s "
                        f"entry seq {rseq} ({received[name]!r})",
                    )
            for name in ("rows", "chunks"):
                if received["detail"].get(name) != sent["detail"].get(name):
                    raise _fail(
                        where,
                        f"share {share_id}: {name} {sent['detail'].get(name)!r} differs from "
                        f"{peer}'s entry seq {rseq} ({received['detail'].get(name)!r})",
                    )
            if received["peer"] != node:
                raise _fail(
                    f"{other.files.path}: entry seq {rseq}",
                    f"share {share_id} names provider {received['peer']!r}, expected {node!r}",
                )
            report.shares_checked += 1
        for share_id, (seq, received) in bundle.shares_received.items():
            providers = by_node.get(received["peer"], [])
            if not providers or any(share_id in p.shares_sent for p in providers):
                continue
            provider = max(providers, key=lambda p: p.last_time)
            if share_id in bundle.receipts_failed and not strict:
                report.notes.append(
                    f"share {share_id} received by {node} (seq {seq}): {received['peer']} never "
                    "acknowledged the receipt (share.receipt_failed), so it has no share.sent"
                )
                continue
            # The provider records share.sent when the receipt arrives, on its own
            # clock: the slack covers the receipt's deadline and clock skew.
            if not strict and provider.last_time <= received["time"] + _COVERAGE_SLACK_MS:
                report.notes.append(
                    f"share {share_id} received by {node} (seq {seq}) is not yet covered: "
                    f"{received['peer']}'s bundle ends before its receipt could be recorded; "
                    "export it again to check it"
                )
                continue
            raise _fail(
                f"{bundle.files.path}: entry seq {seq}",
                f"share {share_id} received from {received['peer']} has no share.sent "
                "in its ledger",
            )


def _check_not_replaced(
    logs: Sequence[_Bundle],
    recipient: str,
    signer: bytes,
    sent: dict[str, Any],
    serials: dict[tuple[str, bytes], int],
    where: str,
) -> None:
    """Fail a receipt signed under a key of ``recipient`` after its log under a later
    key began.

    A key is *replaced* by a log's key when the bundle of that log carries a
    directory newer than every directory naming the signer's key. A department
    enrolls again from a fresh home, so its log under the new key begins after
    the old node stopped signing; a provider records ``share.sent`` as the
    receipt arrives, on its own clock. A ``share.sent`` later than the start of
    such a log (beyond the slack for clock skew) carries a receipt the replaced
    key signed after the department stopped using it: the compromised key at work.
    Without a bundle of a later log, there is nothing to date the replacement by.

    Raises:
        VerificationError: naming the ``share.sent``, the signer's newest
            directory serial and the later log's bundle.
    """
    last_serial = serials.get((recipient, signer))
    if last_serial is None:
        return  # not named by a checked directory: the recipient's current key
    later = [
        b
        for b in logs
        if b.log[1] != signer and b.directory.serial > last_serial and b.first_time is not None
    ]
    if not later:
        return
    first = min(later, key=lambda b: b.first_time or 0)
    began = first.first_time or 0
    if sent["time"] <= began + _COVERAGE_SLACK_MS:
        return
    raise _fail(
        where,
        f"receipt for share {sent['detail'].get('share_id')} is signed under the key of "
        f"{recipient} that directory serial {last_serial} names, but {recipient}'s log under "
        f"a later key ({first.files.path}, directory serial {first.directory.serial}) began "
        f"at time {began}, {(sent['time'] - began) // 1000} s before this entry: a key "
        f"{recipient} had replaced signed the receipt",
    )


def _receipt_time(sent: dict[str, Any]) -> int:
    """The end of the second the signed receipt names (checked by :func:`_check_receipt`),
    in milliseconds like entry times; else the entry's own time."""
    receipt = sent["detail"].get("receipt", {}).get("receipt", {})
    value = receipt.get("time") if isinstance(receipt, dict) else None
    return value * 1000 + 999 if type(value) is int else int(sent["time"])


def _check_witnessed(
    bundles: list[_Bundle],
    report: Report,
    *,
    policy: DirectoryView,
    strict: bool,
    named: dict[str, list[Ed25519PublicKey]],
) -> dict[tuple[str, bytes], int]:
    """Check every checkpoint a witness in ``bundles`` recorded cosigning; returns,
    per log (origin and raw key, as :attr:`_Bundle.log`), the largest size that
    ``policy.witness_threshold`` of the given witnesses (witnesses in ``policy``)
    confirm.

    A claim is checked under the log key that signed its note when a CA-checked
    directory, a bundle's or a directory file, names that key for the log's
    department (``named``, see :func:`_named_keys`), and bound to the bundle of that log only: a
    department enrolled again under a new key keeps its origin but starts a
    new log, and the two are not one history. Under one key, everything
    below holds as for any log.

    A ``witness.cosigned`` entry carries the log's signed note and the
    witness's cosignature line, so a claim binds the log only once both
    verify: a witness cannot frame a log with a root the log never signed.
    Every claim is verified, whether or not the log's bundle is given, and
    two claims of one log for one size with different roots are proof that
    the log showed its witnesses different histories (a split view).

    When the log's bundle is given, each claim is also checked against its
    entries: a log's own bundle may leave its checkpoints out, or hold
    entries rewritten after them; what it signed and its witnesses recorded
    still binds it. A log bundle shorter than a claim is a cut-back log when
    the log went on recording after the claim, and otherwise possibly an
    export older than the witness's (a note, or a failure when ``strict``).

    Raises:
        VerificationError: a claim that does not verify, a split view, or a log
            bundle that contradicts what its witnesses cosigned.
    """
    by_log = {b.log: b for b in bundles}
    confirmed: dict[tuple[str, bytes], dict[str, int]] = {}
    # (origin, log key, size) -> root -> (witness, entry) of the first claim of that root.
    roots: dict[tuple[str, bytes, int], dict[bytes, tuple[str, str]]] = {}
    unsigned = unknown = rekeyed = 0
    for witness in bundles:
        witness_name = witness.manifest["node"]
        for seq, fields in witness.cosigned:
            where = f"{witness.files.path}: entry seq {seq}"
            detail = fields["detail"]
            origin = detail.get("origin")
            if not isinstance(origin, str):
                raise _fail(where, f"witness.cosigned names origin {origin!r}, not a string")
            if origin == witness.manifest["origin"]:
                continue
            if "note" not in detail or "cosignature" not in detail:
                unsigned += 1  # recorded before witnesses kept the signed note
                continue
            log_node = _department_of(witness.directory, origin)
            if log_node is None:
                unknown += 1  # a log the witness's directory no longer lists
                continue
            own = witness.directory.keys.get(log_node)
            keys = [own] if own is not None else []
            keys += [k for k in named.get(log_node, ()) if own is None or k != own]
            claimed = _signed_claim(witness, log_node, origin, detail, where, keys)
            if claimed is None:
                rekeyed += 1
                continue
            (size, log_key), root = claimed, _claim_root(detail)
            log_id = (origin, log_key.public_bytes_raw())
            seen = roots.setdefault((*log_id, size), {})
            seen.setdefault(root, (witness_name, where))
            if len(seen) > 1:
                (first_root, (first_witness, first_where)), *_ = seen.items()
                raise _fail(
                    where,
                    f"{log_node} signed two roots for size {size}: {first_root.hex()} "
                    f"cosigned by {first_witness} ({first_where}) and {root.hex()} cosigned "
                    f"by {witness_name}: the log showed its witnesses different histories",
                )
            log = by_log.get(log_id)
            if log is None:
                continue
            name = log.manifest["node"]
            if size > log.count:
                said = (
                    f"{log.files.path} holds {log.count} entries, but {witness_name} cosigned "
                    f"{name}'s signed checkpoint of size {size} ({where})"
                )
                if log.last_time > fields["time"] + _COVERAGE_SLACK_MS or strict:
                    raise _fail(str(log.files.path), f"{said}: the log was cut back")
                report.notes.append(
                    f"{said}: export {name} again; if a fresh export is still shorter, "
                    f"{name} cut back its log"
                )
                continue
            actual = _root_at(log.levels, size)
            if actual != root:
                raise _fail(
                    str(log.files.path),
                    f"entries 0..{size - 1} have root {actual.hex()}, but {name} signed root "
                    f"{root.hex()} for that size, and {witness_name} cosigned it "
                    f"({where}): the log was rewritten after it was witnessed",
                )
            report.witnessed_checked += 1
            if witness_name not in policy.witnesses:
                continue  # no longer a witness: its word does not count towards the threshold
            if _raw(policy.keys[witness_name]) != _raw(witness.directory.keys[witness_name]):
                # Cosigned under a key the newest directory no longer names (the witness
                # enrolled again): checked above, but an older directory cannot make it count.
                continue
            sizes = confirmed.setdefault(log_id, {})
            sizes[witness_name] = max(sizes.get(witness_name, 0), size)
    if unsigned:
        report.notes.append(
            f"{unsigned} witness record(s) without the log's signed note were not used"
        )
    if unknown:
        report.notes.append(
            f"{unknown} witness record(s) for logs not in the witness's directory were not used"
        )
    if rekeyed:
        report.notes.append(
            f"{rekeyed} witness record(s) signed under keys the directory no longer names "
            "(a department enrolled again) were not used; a bundle carrying a directory "
            "that names the earlier key, or that directory file, lets them be checked"
        )
    covered: dict[tuple[str, bytes], int] = {}
    threshold = policy.witness_threshold
    for log_id, per_witness in confirmed.items():
        ranked = sorted(per_witness.values(), reverse=True)
        if threshold and len(ranked) >= threshold:
            # The largest size that at least `threshold` distinct witnesses cosigned.
            covered[log_id] = ranked[threshold - 1]
    return covered


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _named_keys(directories: Sequence[DirectoryView]) -> dict[str, list[Ed25519PublicKey]]:
    """Every distinct Ed25519 key a CA-checked directory among ``directories`` (the
    bundles' and the directory files') names, per department, newest directory first.

    Only a directory whose signature was checked can vouch for a key: a key
    named nowhere else (a department's compromised key after it enrolled
    again, used to sign a new history) is not one of these unless a
    CA-signed directory named it when it was the department's key.
    """
    named: dict[str, list[Ed25519PublicKey]] = {}
    seen: set[tuple[str, bytes]] = set()
    checked = sorted(
        (d for d in directories if d.signature_checked),
        key=lambda d: d.serial,
        reverse=True,
    )
    for directory in checked:
        for department, key in directory.keys.items():
            if (department, key.public_bytes_raw()) not in seen:
                seen.add((department, key.public_bytes_raw()))
                named.setdefault(department, []).append(key)
    return named


def _last_serials(directories: Sequence[DirectoryView]) -> dict[tuple[str, bytes], int]:
    """The newest serial among the CA-checked ``directories`` that names each
    ``(department, raw Ed25519 key)``."""
    serials: dict[tuple[str, bytes], int] = {}
    for directory in directories:
        if not directory.signature_checked:
            continue
        for department, key in directory.keys.items():
            name = (department, key.public_bytes_raw())
            serials[name] = max(serials.get(name, directory.serial), directory.serial)
    return serials


def _department_of(directory: DirectoryView, origin: str) -> str | None:
    """The department whose log has ``origin`` in ``directory``, or None."""
    for department in directory.keys:
        if directory.origin(department) == origin:
            return department
    return None


def _claim_root(detail: dict[str, Any]) -> bytes:
    return base64.b64decode(str(detail["root"]), validate=True)


def _signed_claim(
    witness: _Bundle,
    log_node: str,
    origin: str,
    detail: dict[str, Any],
    where: str,
    log_keys: Sequence[Ed25519PublicKey],
) -> tuple[int, Ed25519PublicKey] | None:
    """Verify a ``witness.cosigned`` claim about ``log_node``'s log: the log's signature
    on the note, the note's size and root as the entry states them, and the witness's
    cosignature (under the witness's own directory); return the size and the log key.

    ``log_keys`` are the keys the log may be signed under (see :func:`_named_keys`);
    the one whose key ID the note carries is used. Returns None when the note
    carries none of them, or the cosignature another key ID than the witness's
    directory key: a department that enrolled again under a new key keeps its
    origin, and a claim under a key no directory at hand names is evidence about
    no log the auditor can identify.

    Raises:
        VerificationError: naming the witness's entry, whose claim does not verify.
    """
    directory = witness.directory
    witness_node = witness.manifest["node"]
    witness_key = directory.witness_keys(exclude=log_node).get(directory.origin(witness_node))
    try:
        if not log_keys or witness_key is None:
            raise ValueError(f"{log_node} or {witness_node} is not a log and witness here")
        note, line = str(detail["note"]).encode(), str(detail["cosignature"]).encode()
        witness_origin = directory.origin(witness_node)
        witness_kid = key_id(witness_origin, COSIGNATURE_TYPE, witness_key)
        signed = {s.key_id for s in parse_note(note).signatures if s.name == origin}
        log_key = next(
            (k for k in log_keys if key_id(origin, ED25519_TYPE, k) in signed),
            None,
        )
        if log_key is None:
            return None
        if parse_signature_line(line).key_id != witness_kid:
            return None
        checkpoint = verify_checkpoint(note, origin, log_key)
        if checkpoint.size != detail.get("size") or checkpoint.root != _claim_root(detail):
            raise ValueError("its size or root differs from the signed note it carries")
        cosigned = cosignatures(
            parse_note(note + line), {directory.origin(witness_node): witness_key}
        )
        if directory.origin(witness_node) not in cosigned:
            raise ValueError(f"it carries no valid cosignature by {witness_node}")
    except (ValueError, TypeError, KeyError, binascii.Error, LedgerError) as e:
        raise _fail(where, f"witness.cosigned entry does not verify: {e}", e) from e
    return checkpoint.size, log_key


def _load_directory_files(
    paths: Sequence[Path], ca_pem: bytes | None, bundles: list[_Bundle]
) -> list[tuple[Path, DirectoryView]]:
    """Read and check the directory files given beside ``bundles``.

    Each file is the signed directory document a node installs. It is checked
    exactly as a bundle's directory is: under ``ca_pem``, or without one under
    the CA the bundles carry (they all carry the same one, checked by the
    caller). Its expiry is not checked: an older directory is expected to have
    expired, and it vouches only for keys it named while it was current. A
    file no CA can check would vouch for nothing, so it is refused.

    Raises:
        DirectoryFileError: naming the file, which cannot be read, is malformed,
            does not verify under the CA, or is for another federation.
    """
    trusted = (
        ca_pem
        if ca_pem is not None
        else next((b.ca_pem for b in bundles if b.ca_pem is not None), None)
    )
    federation = bundles[0].directory.federation
    loaded: list[tuple[Path, DirectoryView]] = []
    for given in paths:
        path = Path(given)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DirectoryFileError(
                f"{path}: cannot read directory file: {e.strerror or e}"
            ) from e
        if trusted is None:
            raise DirectoryFileError(
                f"{path}: no CA to check this directory file against (the bundles carry no "
                "ca.pem): a directory whose signature is not checked vouches for no key"
            )
        try:
            directory = parse_directory(data, trusted)
        except LedgerError as e:
            raise DirectoryFileError(f"{path}: {e}") from e
        if directory.federation != federation:
            raise DirectoryFileError(
                f"{path}: directory is for federation {directory.federation!r}, the bundles "
                f"are of {federation!r}"
            )
        loaded.append((path, directory))
    return loaded


def _note_previous_key(bundle: _Bundle, policy: DirectoryView, report: Report) -> None:
    """Say so when ``bundle``'s log is under another key than ``policy`` names for its
    department: the log of a key the department had before it enrolled again."""
    node = bundle.manifest["node"]
    current = policy.keys.get(node)
    if current is None:
        report.notes.append(
            f"{bundle.files.path}: log of {node}, which directory serial {policy.serial} "
            f"no longer names, checked under its key from directory serial "
            f"{bundle.directory.serial}"
        )
    elif current.public_bytes_raw() != bundle.log[1]:
        report.notes.append(
            f"{bundle.files.path}: log of {node} under its previous key, from directory "
            f"serial {bundle.directory.serial} (directory serial {policy.serial} names "
            "another key: the department enrolled again and its new log starts at seq 0)"
        )


def verify_bundle(
    paths: Sequence[Path],
    *,
    ca_pem: bytes | None = None,
    require_published: bool = False,
    min_directory_serial: int = 0,
    directories: Sequence[Path] = (),
) -> Report:
    """Verify the bundles at ``paths`` and check them against each other.

    ``ca_pem`` is the federation CA certificate the auditor trusts. Without it
    the ``ca.pem`` inside each bundle is used (anyone can make a CA, so this
    proves only that the bundles agree with each other): all bundles must then
    carry the same CA, and ``Report.ca_from_bundle`` is set. A bundle with
    neither is checked without the directory's signature (the report says so).

    ``require_published`` fails a bundle holding entries that no published
    checkpoint, its own or one ``witness_threshold`` of its witnesses' bundles
    show they cosigned, covers: only those entries are protected against the
    log rewriting them. It also turns every "not yet covered" note into a
    failure, for an audit of bundles exported together.

    Each bundle's checkpoints are checked against the directory it carries;
    whether a checkpoint is *published* is decided by the witness policy
    (witnesses and ``witness_threshold``) of the newest directory among the
    bundles, so a bundle cannot choose an older, laxer directory.
    ``min_directory_serial`` refuses any bundle whose directory is older: an
    auditor with one bundle gives the serial of the directory it knows.

    ``directories`` are signed directory files the auditor holds besides the
    bundles (for example the one that named a department's key before it
    enrolled again). Each is checked under the same CA as the bundles'
    directories and must be of their federation. Their keys are key history,
    used exactly as the keys of an older directory a bundle carries: a receipt
    or a witness claim verifies under a key a CA-checked directory names for
    its signer, and is bound to the log of that key. A directory file newer
    than every bundle's sets the witness policy; an older one never does, so it
    cannot lower the threshold.

    Raises:
        DirectoryFileError: a directory file is unreadable, malformed, not
            signed by the CA, of another federation, or differs from another
            directory with its serial.
        VerificationError: the first violation, naming the bundle and the
            entry seq or checkpoint size.
    """
    started = time.perf_counter()
    if not paths:
        raise VerificationError("no bundles given")
    bundles: list[_Bundle] = []
    report = Report(bundles=[])
    try:
        for path in paths:
            bundle = _load(Path(path), ca_pem)
            if bundle.directory.serial < min_directory_serial:
                raise VerificationError(
                    f"{path}: directory.json: serial {bundle.directory.serial} is older than "
                    f"the oldest accepted, {min_directory_serial}"
                )
            published_size, root = _check_checkpoints(bundle)
            bundles.append(bundle)
            report.bundles.append(
                BundleReport(
                    path=Path(path),
                    origin=bundle.manifest["origin"],
                    node=bundle.manifest["node"],
                    entries=bundle.count,
                    checkpoints=list(bundle.manifest["checkpoints"]),
                    published_size=published_size,
                    root=root,
                    tail=bundle.count - published_size,
                    directory_signature_checked=bundle.directory.signature_checked,
                    directory_serial=bundle.directory.serial,
                    directory_threshold=bundle.directory.witness_threshold,
                )
            )
        # A department enrolled again under a new key has a new log: its bundles
        # under different keys are two logs, under one key a duplicate or a fork.
        logs = [b.log for b in bundles]
        if len(set(logs)) != len(logs):
            nodes = sorted(b.manifest["node"] for b in bundles)
            raise VerificationError(
                f"two bundles are from the same department under the same key: {nodes}"
            )
        federations = {b.directory.federation for b in bundles}
        if len(federations) != 1:
            raise VerificationError(
                f"bundles come from different federations: {sorted(federations)}"
            )
        report.ca_from_bundle = ca_pem is None
        if ca_pem is None and len({b.ca_digest for b in bundles}) > 1:
            raise VerificationError(
                "the bundles' directories are signed under different CAs "
                f"({', '.join(f'{b.files.path}: {b.ca_digest.hex()[:16]}' for b in bundles)}); "
                "one of them is not from this federation"
            )
        files = _load_directory_files(directories, ca_pem, bundles)
        report.directories = [
            DirectoryReport(path, d.federation, d.serial, d.witness_threshold) for path, d in files
        ]
        directory = _policy(bundles, files)
        report.policy_serial = directory.serial
        report.policy_threshold = directory.witness_threshold
        checked = [b.directory for b in bundles] + [d for _, d in files]
        named = _named_keys(checked)
        _cross_check(
            bundles,
            directory,
            report,
            strict=require_published,
            named=named,
            serials=_last_serials(checked),
        )
        witnessed = _check_witnessed(
            bundles, report, policy=directory, strict=require_published, named=named
        )
        for bundle, entry in zip(bundles, report.bundles, strict=True):
            entry.published_size = _published_under(bundle, directory)
            entry.root = _root_at(bundle.levels, entry.published_size)
            entry.tail = bundle.count - entry.published_size
            if bundle.directory.serial < directory.serial:
                report.notes.append(
                    f"{bundle.files.path} carries directory serial {bundle.directory.serial}; "
                    f"its checkpoints were counted as published under serial {directory.serial} "
                    f"(witness threshold {directory.witness_threshold})"
                )
            _note_previous_key(bundle, directory, report)
            entry.witnessed_size = witnessed.get(bundle.log, 0)
            covered = max(entry.published_size, entry.witnessed_size)
            if require_published and covered < bundle.count:
                raise VerificationError(
                    f"{bundle.files.path}: entries {covered}..{bundle.count - 1} are covered by "
                    "no published checkpoint, so nothing stops the log from rewriting them; "
                    "run 'fednode ledger checkpoint' on that node and export again"
                )
    finally:
        for bundle in bundles:
            bundle.files.close()
    report.seconds = time.perf_counter() - started
    return report
