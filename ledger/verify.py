"""The offline auditor: verify one or more ledger bundles with nothing but their bytes.

For each bundle, in this order, the first violation raises
:class:`~ledger.errors.VerificationError` naming the bundle, the entry seq or
checkpoint size, and what is wrong:

1. the manifest (format version, origin, size, increasing checkpoint sizes);
2. the federation directory (and its CA signature when a CA is given);
3. every entry: canonical JSON, a well-formed v1 entry, ``seq`` dense from 0,
   the recording node, and ``prev`` equal to the previous entry's leaf hash;
4. every checkpoint: the log's Ed25519 signature (key from the directory), the
   Merkle root recomputed from the entries, at least ``witness_threshold``
   valid cosignatures from the directory's witnesses, and the consistency
   proof from the previous checkpoint.

The hash chain and the Merkle roots are both checked over the whole range;
neither stands in for the other. Given several bundles, every share is then
cross-checked: each ``share.sent`` needs a matching ``share.received`` in the
recipient's bundle and a receipt signed by the recipient, and each
``share.received`` needs its ``share.sent``.

Speed: a batch of entries is first matched against the exact grammar of a
common-shape entry (:mod:`ledger.scan`, no parsing), and lines outside it are
parsed strictly one by one; a batch the scan cannot confirm is parsed by the
C JSON parser and re-encoded in one call to confirm canonical form, and if
that fails too it is re-checked entry by entry to name the first bad one.
Every entry is still checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import operator
import os
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from ledger.bundle_format import BUNDLE_TYPE, BUNDLE_VERSION, checkpoint_name
from ledger.canonical import MAX_SAFE_INTEGER, dumps, loads
from ledger.checkpoint import cosignatures, parse_note, verify_checkpoint
from ledger.directory import DirectoryView, parse_directory
from ledger.entry import ENTRY_FIELDS, GENESIS_PREV, parse_entry, validate_fields
from ledger.errors import CheckpointError, EntryError, LedgerError, ProofError, VerificationError
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, hash_children, verify_consistency
from ledger.scan import node_token, scan_batch

__all__ = ["BundleReport", "Report", "verify_bundle"]

_BATCH = 4096
_CHUNK = 4096
_PARALLEL_MIN = 50_000
_MAX_WORKERS = 8
_SHARE_EVENTS = frozenset({"share.sent", "share.received"})
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
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
)
_ASTRAL_RE = re.compile(rb"[\xf0-\xf4]")
_OUTCOME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z")
_OPTIONAL = ("actor", "peer", "agreement", "dataset", "purpose", "digest")


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


@dataclass
class Report:
    """The result of a successful verification."""

    bundles: list[BundleReport]
    shares_checked: int = 0
    shares_unmatched_peers: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(b.entries for b in self.bundles)


class _Files:
    """Read named files from a bundle directory or zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
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
        except (OSError, zipfile.BadZipFile) as e:
            raise VerificationError(f"{self.path}: cannot read {name}: {e}") from e

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
    leaves: list[bytes]
    levels: list[list[bytes]]
    shares_sent: dict[str, tuple[int, dict[str, Any]]]
    shares_received: dict[str, tuple[int, dict[str, Any]]]


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
    joined = b"[" + b",".join(lines) + b"]"
    try:
        parsed = json.loads(
            joined, parse_float=_refuse, parse_constant=_refuse, parse_int=_safe_int
        )
        canonical = _ENCODER.encode(parsed).encode()
    except (ValueError, UnicodeError, RecursionError):
        fast = False
    else:
        # Equal bytes prove canonical form for ASCII and BMP keys; an
        # astral-plane key would sort differently, so such batches take the
        # exact path.
        fast = canonical == joined and (joined.isascii() or _ASTRAL_RE.search(joined) is None)
    if fast and len(parsed) == len(lines):
        result: list[dict[str, Any]] = parsed
        return result
    return [_check_entry_slow(raw, first_seq + i, where) for i, raw in enumerate(lines)]


def _safe_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(f"integer {text} is outside +-(2**53-1)")
    return value


def _refuse(text: str) -> Any:
    raise ValueError(f"{text} is not allowed")


def _common_shape(f: dict[str, Any]) -> bool:
    """Return True if ``f`` is a plain v1 entry (no commitments); False means "look closer"."""
    if f.keys() != ENTRY_FIELDS or f["v"] != 1 or type(f["v"]) is not int:
        return False
    if type(f["sensitive"]) is not list or f["sensitive"]:
        return False
    seq, moment, detail, event, outcome = f["seq"], f["time"], f["detail"], f["event"], f["outcome"]
    if type(seq) is not int or type(moment) is not int or moment < 0 or type(detail) is not dict:
        return False
    if type(event) is not str or type(outcome) is not str:
        return False
    if not _EVENT_RE.match(event) or not _OUTCOME_RE.match(outcome):
        return False
    if len(event) > _MAX_NAME or len(outcome) > _MAX_NAME:
        return False
    for name in _OPTIONAL:
        value = f[name]
        if value is not None and type(value) is not str:
            return False
    columns = f["columns"]
    return columns is None or _str_list(columns)


def _check_fields(fields: dict[str, Any], seq: int, node: str, prev: Any, where: str) -> None:
    # The common shape is checked inline; anything unusual (sensitive fields,
    # unexpected types) goes through the full validator for a precise message.
    if not _common_shape(fields):
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
            f"prev {fields['prev']} is not the leaf hash of entry seq {seq - 1} ({prev})",
        )


def _str_list(value: Any) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def _build_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Return every level of complete aligned subtrees, leaves first."""
    levels = [leaves]
    sha = hashlib.sha256
    level = leaves
    while len(level) > 1:
        level = [
            sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        levels.append(level)
    return levels


def _root_at(levels: list[list[bytes]], size: int) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    parts = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            parts.append(levels[level][start >> level])
            start += 1 << level
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = hash_children(h, acc)
    return acc


_ChunkResult = tuple[bytes | list[bytes], str | None, list[dict[str, Any]], int, str | None]


def _check_chunk(
    data: bytes, first_seq: int, node: str, where: str, lines: list[bytes] | None = None
) -> _ChunkResult:
    """Check a run of entries, returning a violation instead of raising it.

    The caller must compare the run's first ``prev`` with the run before it
    before it reports an error from inside the run, so errors stay in seq order.
    A worker process (no ``lines``) returns the leaf hashes concatenated,
    which is cheaper to send back than a list.
    """
    state: dict[str, Any] = {"first_prev": None}
    try:
        leaves, shares, count = _check_run(data, first_seq, node, where, state, lines)
    except VerificationError as e:
        return b"", state["first_prev"], [], 0, str(e)
    hashes: bytes | list[bytes] = leaves if lines is not None else b"".join(leaves)
    return hashes, state["first_prev"], shares, count, None


def _batch_ok(parsed: list[Any], seq0: int, node: str, leaves: list[bytes], start: int) -> bool:
    """Check a whole batch of parsed entries at C speed; False means "look closer".

    Each member is gathered across the batch with ``map``/``itemgetter`` and
    checked in one comparison, instead of a Python loop per entry. Any
    surprise (a commitment, an odd type, a broken link) returns False, and
    the caller re-checks entry by entry for the exact message. ``leaves`` are
    the run's leaf hashes and ``start`` the batch's index within the run; the
    first entry of a run is linked by the caller.
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
        if set(map(type, times)) != {int} or min(times) < 0:
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
) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """Check a run of entries (each line ending in a newline) starting at ``first_seq``.

    Returns the leaf hashes, the share entries and the count, and puts the
    first entry's ``prev`` (its link to the run before) in ``state``. Runs in
    a worker process for large bundles, so it takes and returns only plain
    values. ``lines``, when the caller has them, are ``data`` split at its
    newlines.

    Raises:
        VerificationError: the first bad entry of the run.
    """
    if lines is None:
        lines = data.split(b"\n")[:-1]
    sha = hashlib.sha256
    leaves = [sha(b"\x00" + line).digest() for line in lines]
    kept: list[dict[str, Any]] = []
    token = node_token(node)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        token = None
    for start in range(0, len(lines), _BATCH):
        if token is not None:
            # The grammar scan confirms common-shape batches without parsing them.
            batch = lines[start : start + _BATCH]
            scanned = scan_batch(
                batch,
                first_seq + start,
                token,
                leaves[start : start + len(batch) - 1],
                data if len(batch) == len(lines) else None,
            )
            if scanned is not None:
                if start == 0:
                    state["first_prev"] = scanned[0].decode()
                kept.extend(scanned[1])
                continue
        parsed = _parse_batch(lines[start : start + _BATCH], first_seq + start, where)
        if start == 0 and parsed and type(parsed[0]) is dict:
            state["first_prev"] = str(parsed[0].get("prev"))
        if _batch_ok(parsed, first_seq + start, node, leaves, start):
            kept.extend(f for f in parsed if f["event"] in _SHARE_EVENTS)
            continue
        # Something in this batch is off: walk it entry by entry to name the first violation.
        for i, fields in enumerate(parsed):
            index = start + i
            seq = first_seq + index
            if type(fields) is not dict:
                raise _fail(f"{where}: entry seq {seq}", "is not a JSON object")
            if index == 0:
                state["first_prev"] = str(fields.get("prev"))
                _check_fields(fields, seq, node, fields.get("prev"), where)
            else:
                _check_fields(fields, seq, node, leaves[index - 1].hex(), where)
            if fields["event"] in _SHARE_EVENTS:
                kept.append(fields)
    return leaves, kept, len(lines)


def _chunks(data: bytes, lines: list[bytes]) -> list[tuple[bytes, int, list[bytes]]]:
    """Cut ``data`` into runs of ``_CHUNK`` lines: (bytes, first index, lines)."""
    chunks = []
    pos = 0
    for start in range(0, len(lines), _CHUNK):
        part = lines[start : start + _CHUNK]
        end = pos + sum(map(len, part)) + len(part)
        chunks.append((data[pos:end], start, part))
        pos = end
    return chunks


def _load_entries(
    files: _Files, manifest: dict[str, Any]
) -> tuple[int, list[bytes], list[dict[str, Any]]]:
    where = str(files.path)
    data = files.require("entries.jsonl")
    if data and not data.endswith(b"\n"):
        raise _fail(f"{where}: entries.jsonl", "does not end with a newline (truncated?)")
    lines = data.split(b"\n")[:-1] if data else []
    node = manifest["node"]
    chunks = _chunks(data, lines)
    workers = min(os.cpu_count() or 1, _MAX_WORKERS)
    results: Iterator[_ChunkResult]
    pool: ProcessPoolExecutor | None = None
    if len(lines) >= _PARALLEL_MIN and workers > 1:
        # Entry checks are pure CPU; processes sidestep the GIL. Results come
        # back in seq order, so the first error raised is the first violation.
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(
            _check_chunk,
            [c[0] for c in chunks],
            [c[1] for c in chunks],
            repeat(node),
            repeat(where),
        )
    else:
        results = (_check_chunk(chunk, start, node, where, part) for chunk, start, part in chunks)
    leaves: list[bytes] = []
    kept: list[dict[str, Any]] = []
    try:
        for (_, start, _), (hashes, first_prev, shares, _count, error) in zip(
            chunks, results, strict=True
        ):
            expected = GENESIS_PREV if start == 0 else leaves[-1].hex()
            if first_prev is not None and first_prev != expected:
                raise _fail(
                    f"{where}: entry seq {start}",
                    f"prev {first_prev} is not the leaf hash of entry seq {start - 1} ({expected})"
                    if start
                    else f"prev {first_prev} is not the genesis value",
                )
            if error is not None:
                raise VerificationError(error)
            if isinstance(hashes, bytes):
                leaves.extend([hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)])
            else:
                leaves.extend(hashes)
            kept.extend(shares)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len(lines) != manifest["size"]:
        raise _fail(
            f"{where}: entries.jsonl",
            f"holds {len(lines)} entries, the manifest says {manifest['size']}",
        )
    return len(lines), leaves, kept


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
            raise _fail(cp_where, str(e), e) from e
        if checkpoint.size != size:
            raise _fail(cp_where, f"note is for size {checkpoint.size}")
        if size > len(bundle.leaves):
            raise _fail(
                cp_where, f"covers more entries than the bundle holds ({len(bundle.leaves)})"
            )
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
    return previous if previous is not None else (0, EMPTY_ROOT)


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
    try:
        directory = parse_directory(files.require("directory.json"), ca_pem or files.read("ca.pem"))
    except LedgerError as e:
        raise _fail(f"{path}: directory.json", str(e), e) from e
    if directory.federation != manifest["federation"]:
        raise _fail(str(path), f"directory is for federation {directory.federation!r}")
    if manifest["origin"] != directory.origin(manifest["node"]):
        raise _fail(
            str(path),
            f"origin {manifest['origin']!r} is not {directory.origin(manifest['node'])!r}",
        )
    count, leaves, shares = _load_entries(files, manifest)
    sent: dict[str, tuple[int, dict[str, Any]]] = {}
    received: dict[str, tuple[int, dict[str, Any]]] = {}
    for fields in shares:
        detail = fields["detail"]
        share_id = detail.get("share_id")
        if fields["outcome"] != "ok" or not isinstance(share_id, str):
            continue
        target = sent if fields["event"] == "share.sent" else received
        if share_id in target:
            raise _fail(
                f"{path}: entry seq {fields['seq']}",
                f"share {share_id} is recorded twice (first at seq {target[share_id][0]})",
            )
        target[share_id] = (fields["seq"], fields)
    return _Bundle(files, manifest, directory, count, leaves, _build_levels(leaves), sent, received)


def _check_receipt(
    sender: _Bundle, seq: int, sent: dict[str, Any], recipient: str, directory: DirectoryView
) -> None:
    where = f"{sender.files.path}: entry seq {seq}"
    detail = sent["detail"]
    signed = detail.get("receipt")
    if not isinstance(signed, dict) or not isinstance(signed.get("receipt"), dict):
        raise _fail(where, f"share {detail.get('share_id')} carries no signed receipt")
    receipt = signed["receipt"]
    key = directory.keys.get(recipient)
    if key is None:
        raise _fail(where, f"recipient {recipient!r} is not in the federation directory")
    try:
        signature = base64.b64decode(signed.get("signature", ""), validate=True)
        key.verify(signature, dumps(receipt))
    except (binascii.Error, TypeError, ValueError, InvalidSignature, LedgerError) as e:
        raise _fail(
            where, f"receipt for share {detail.get('share_id')} is not signed by {recipient}", e
        ) from e
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


def _cross_check(bundles: list[_Bundle], directory: DirectoryView, report: Report) -> None:
    by_node = {b.manifest["node"]: b for b in bundles}
    for bundle in bundles:
        node = bundle.manifest["node"]
        for share_id, (seq, sent) in bundle.shares_sent.items():
            peer = sent["peer"]
            _check_receipt(bundle, seq, sent, peer, directory)
            other = by_node.get(peer)
            if other is None:
                report.shares_unmatched_peers += 1
                continue
            where = f"{bundle.files.path}: entry seq {seq}"
            match = other.shares_received.get(share_id)
            if match is None:
                raise _fail(
                    where, f"share {share_id} sent to {peer} has no share.received in its ledger"
                )
            rseq, received = match
            for name in ("digest", "agreement", "dataset"):
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
            provider = by_node.get(received["peer"])
            if provider is not None and share_id not in provider.shares_sent:
                raise _fail(
                    f"{bundle.files.path}: entry seq {seq}",
                    f"share {share_id} received from {received['peer']} has no share.sent "
                    "in its ledger",
                )


def verify_bundle(paths: Sequence[Path], *, ca_pem: bytes | None = None) -> Report:
    """Verify the bundles at ``paths`` and cross-check their shares.

    ``ca_pem`` is the federation CA certificate the auditor trusts; without it
    the ``ca.pem`` inside each bundle is used, and without that the
    directory's signature is not checked (the report says so).

    Raises:
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
                )
            )
        nodes = [b.manifest["node"] for b in bundles]
        if len(set(nodes)) != len(nodes):
            raise VerificationError(f"two bundles are from the same department: {sorted(nodes)}")
        federations = {b.directory.federation for b in bundles}
        if len(federations) != 1:
            raise VerificationError(
                f"bundles come from different federations: {sorted(federations)}"
            )
        directory = max((b.directory for b in bundles), key=lambda d: d.serial)
        _cross_check(bundles, directory, report)
    finally:
        for bundle in bundles:
            bundle.files.close()
    report.seconds = time.perf_counter() - started
    return report
