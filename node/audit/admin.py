"""Operator commands for the ledger, served on the admin socket.

``ledger.checkpoint`` signs and publishes; ``ledger.export`` writes an auditor
bundle; ``ledger.prove`` returns an inclusion proof against the latest
published checkpoint; ``ledger.show`` lists entries with filters;
``ledger.erase`` crypto-shreds one sensitive value.

An erasure removes every copy of the value this node keeps, not only the
ledger's: a revocation reason is also erased from the agreement store
(:func:`node.agreements.workflow.erase_reason`). The other copies go first
and the ledger's last, and each step is idempotent, so an erasure cut short
(a crash, a busy file) is finished by running the same command again; a
value already erased is not an error, and each run is recorded as
``ledger.erased``. The other party of an agreement keeps its own ledger and
store; its operator erases them there.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from ledger.bundle import export_bundle
from ledger.canonical import loads
from ledger.checkpoint import cosignatures, log_name, parse_note
from ledger.errors import CheckpointError, NotPublishedError
from ledger.store import Erasure, LedgerStore
from node.admin.registry import Emit, admin_command
from node.agreements.workflow import REVOCATION_EVENTS, REVOCATION_SENSITIVE, erase_reason
from node.audit.publisher import publish_checkpoint
from node.audit.recorder import AuditRecorder
from node.audit.service import recorder_of
from node.errors import AdminError, BusyError, RequestError
from node.identity.keys import ed25519_public_from_bytes
from node.runtime import NodeRuntime

__all__ = ["ledger_checkpoint", "ledger_erase", "ledger_export", "ledger_prove", "ledger_show"]

_SHOW_LIMIT = 50
_SHOW_SCAN = 200_000
#: A reader holding an old snapshot of the ledger (a backup, an sqlite3 shell)
#: keeps the write-ahead log from being emptied. Each try holds the node's
#: writer for at most half a second, so the pauses between tries let the
#: node's own appends through; about eight seconds in all covers a copy or a
#: quick query finishing, and a longer holder gets exit code 11 (busy).
ERASE_TRIES = 10
ERASE_PAUSE_S = 0.3


def _int_arg(args: dict[str, Any], name: str) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AdminError(f"argument {name!r} must be a non-negative integer, got {value!r}")
    return value


@admin_command("ledger.checkpoint")
def ledger_checkpoint(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    result = publish_checkpoint(runtime, recorder_of(runtime), emit)
    return {
        "size": result.size,
        "root": base64.b64encode(result.root).decode(),
        "cosigners": result.cosigners,
        "threshold": result.threshold,
        "published": result.published,
        "failures": result.failures,
        "incidents": result.incidents,
        "note": result.note.decode(),
    }


@admin_command("ledger.export")
def ledger_export(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    out = args.get("out")
    if not isinstance(out, str) or not Path(out).is_absolute():
        raise AdminError("argument 'out' must be an absolute path")
    recorder = recorder_of(runtime)
    ca = runtime.config.ca_cert_path
    summary = export_bundle(
        recorder.store,
        runtime.directory.raw,
        Path(out),
        origin=recorder.origin,
        ca_pem=ca.read_bytes() if ca.exists() else None,
        published_only=bool(args.get("published_only")),
    )
    return {
        "path": str(summary.path),
        "entries": summary.entries,
        "checkpoints": summary.checkpoints,
        "unpublished_checkpoints": summary.skipped_checkpoints,
    }


def _erase_waiting(
    recorder: AuditRecorder,
    seq: int,
    path: str,
    emit: Emit,
    *,
    agreement: str | None,
    detail: dict[str, object],
) -> Erasure:
    """Erase with its ``ledger.erased`` record in one commit, then try again while a
    reader keeps the write-ahead log (see :data:`ERASE_TRIES`).

    Only the first try records: the value and its record go together, and the
    later tries only empty the write-ahead log, so an erasure has exactly one
    record however many tries it takes. ``deleted`` is whether any try deleted
    the value; ``recorded`` is the first try's record.
    """
    store = recorder.store
    erasure = recorder.erase(seq, path, missing_ok=True, agreement=agreement, detail=detail)
    first = erasure
    for _ in range(ERASE_TRIES - 1):
        if erasure.wal_truncated:
            break
        emit({"event": "waiting", "file": "ledger"})
        time.sleep(ERASE_PAUSE_S)
        erasure = store.erase(seq, path, missing_ok=True)
    return Erasure(
        deleted=first.deleted, wal_truncated=erasure.wal_truncated, recorded=first.recorded
    )


def _latest_published(runtime: NodeRuntime) -> tuple[int, bytes]:
    recorder = recorder_of(runtime)
    directory = runtime.directory
    witnesses = {
        log_name(recorder.federation, e.department): ed25519_public_from_bytes(e.ed25519_public)
        for e in directory.witnesses
        if e.department != runtime.department
    }
    for cp in reversed(recorder.store.checkpoints()):
        try:
            count = len(cosignatures(parse_note(cp.note), witnesses))
        except CheckpointError:
            continue
        if count >= directory.witness_threshold:
            return cp.size, cp.note
    raise NotPublishedError("no checkpoint has enough witness cosignatures yet")


@admin_command("ledger.prove")
def ledger_prove(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    seq = _int_arg(args, "seq")
    size, note = _latest_published(runtime)
    if seq >= size:
        raise NotPublishedError(
            f"entry seq {seq} is not covered by the latest published checkpoint (size {size}); "
            "run 'fednode ledger checkpoint' first"
        )
    store = recorder_of(runtime).store
    proof = store.inclusion_proof(seq, size)
    return {
        "seq": seq,
        "size": size,
        "entry": store.entry(seq).decode(),
        "proof": [base64.b64encode(h).decode() for h in proof],
        "note": note.decode(),
        "origin": recorder_of(runtime).origin,
        # The CA-signed directory gives the auditor the log's and witnesses' keys
        # (ledger.proof_document); it is signed, so carrying it here is safe.
        "directory": runtime.directory.raw.decode(),
    }


@admin_command("ledger.show")
def ledger_show(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    store = recorder_of(runtime).store
    limit = _int_arg(args, "limit") if "limit" in args else _SHOW_LIMIT
    if limit == 0:
        raise AdminError("argument 'limit' must be at least 1")
    since = args.get("since_ms")
    wanted = {k: args.get(k) for k in ("event", "peer", "dataset") if args.get(k)}
    found: list[dict[str, Any]] = []
    end = store.size
    start = max(0, end - _SHOW_SCAN)
    # Newest first, so a limit keeps the most recent matches.
    for _, body, _ in reversed(list(store.iter_entries(start, end))):
        fields = loads(body)
        if since is not None and fields["time"] < since:
            break
        if wanted.get("event") and not str(fields["event"]).startswith(str(wanted["event"])):
            continue
        if any(fields.get(k) != v for k, v in wanted.items() if k != "event"):
            continue
        found.append(fields)
        if len(found) >= limit:
            break
    found.reverse()
    return {"size": store.size, "entries": found, "scanned_from": start}


@admin_command("ledger.erase")
def ledger_erase(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Erase the value of committed field ``field`` of entry ``seq``, and this node's other copies.

    The result names the copies erased and, for an agreement, the other party
    whose operator erases its own copies.

    Raises:
        RequestError: no entry ``seq``, or it commits no field ``field``.
        BusyError: the value is deleted and recorded as erased (or, for the
            agreement store, its copy is), but another process reading the file
            kept an old copy in its write-ahead log for the whole wait; running
            the command again once it is done removes it.
        AgreementError: the agreement store could not finish; run it again.
    """
    seq = _int_arg(args, "seq")
    path = args.get("field")
    if not isinstance(path, str) or not path:
        raise AdminError("argument 'field' must name a sensitive field, e.g. detail.reason")
    recorder = recorder_of(runtime)
    if seq >= recorder.store.size:
        raise RequestError(
            f"the ledger has no entry {seq}: it holds entries 0 to {recorder.store.size - 1}",
            hint="'fednode ledger show --json' lists entries with their seq",
        )
    fields = loads(recorder.store.entry(seq))
    committed = [str(p) for p in fields.get("sensitive") or []]
    if path not in committed:
        held = (
            f"its committed fields are {', '.join(committed)}"
            if committed
            else "it commits no fields"
        )
        raise RequestError(
            f"entry {seq} ({fields['event']}) has no committed field {path!r}; {held}",
            hint="an entry's committed fields are its 'sensitive' list "
            "in 'fednode ledger show --json'",
        )
    # Copies outside the ledger first: until the ledger's value goes, the
    # command can be run again and finds this entry's value still there.
    record = erase_reason(runtime, fields, path)
    detail: dict[str, object] = {}
    if record is not None:
        detail["agreement_reason"] = "erased"
    # Known before the erasure, so it can go into the record committed with it.
    if (seq, path) not in recorder.store.stored_values():
        detail["already_erased"] = True
    # Always through the store, even when the value is gone already: a run cut
    # short after the delete may not have emptied the write-ahead log. The
    # admin service marks the operator as the actor (node.audit.actor).
    erasure = _erase_waiting(
        recorder, seq, path, emit, agreement=fields.get("agreement"), detail=detail
    )
    erased_at = erasure.recorded
    if not erasure.wal_truncated:
        raise BusyError(
            f"the value of entry {seq} {path!r} is deleted (recorded as entry {erased_at}), "
            f"but an older copy stays in the ledger's write-ahead log while another process "
            f"reads the ledger file (waited {ERASE_TRIES * ERASE_PAUSE_S:.0f} s)",
            hint="stop that reader (an open sqlite3 shell, a backup or copy in progress), "
            "then run the same command again to remove the copy",
        )
    return {
        "seq": seq,
        "field": path,
        "recorded_as": erased_at,
        "already_erased": not erasure.deleted,
        "agreement_reason_erased": record is not None,
        "agreement": record.signed.id if record is not None else None,
        "other_party": fields.get("peer") if record is not None else None,
        "still_held": _same_reason_still_held(recorder.store, fields),
    }


def _same_reason_still_held(store: LedgerStore, erased: dict[str, Any]) -> list[dict[str, Any]]:
    """Other committed fields of this ledger that hold the same revocation reason.

    A revocation writes its reason into more than one entry (``agreement.revoked``
    and, on the revoking side, ``agreement.revocation_sent`` with the signed
    notice); the operator is told which are left, so one request is not taken as
    fully met. Only stored values are looked at: a handful of rows, whatever the
    ledger's size.
    """
    agreement = erased.get("agreement")
    if erased.get("event") not in REVOCATION_EVENTS or not isinstance(agreement, str):
        return []
    left = []
    for seq, path in store.stored_values():
        if path not in REVOCATION_SENSITIVE:
            continue
        fields = loads(store.entry(seq))
        if fields.get("agreement") == agreement and fields.get("event") in REVOCATION_EVENTS:
            left.append({"seq": seq, "field": path, "event": fields["event"]})
    return left
