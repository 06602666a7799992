"""Access decisions: may this node, in this role, use this agreement for this mode now?

Default deny: access is granted only when an agreement exists on this node, is
``active`` (countersigned, not revoked), is inside its validity window, names
this node and the peer in the right roles, allows the mode, and covers every
column asked for. Every refusal is recorded in the ledger as ``access.denied``
before :class:`~node.errors.AccessDenied` is raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from node.agreements.store import AgreementRecord, AgreementStore
from node.errors import AccessDenied, AgreementError
from node.timefmt import utc_text

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["agreements_of", "authorize", "check", "deny", "recheck"]

_REVOKED_HINT = "the parties need a new agreement; 'fednode agreement show ID' gives the reason"
_EXPIRED_HINT = "the provider can draw up a new agreement with a later --valid-until"

_EXTENSION = "agreements"
_lock = threading.Lock()


def agreements_of(runtime: NodeRuntime) -> AgreementStore:
    """The runtime's agreement store, opened on first use under the data directory."""
    with _lock:
        store = runtime.extensions.get(_EXTENSION)
        if not isinstance(store, AgreementStore):
            store = AgreementStore(runtime.config.data_dir / "agreements.db")
            runtime.extensions[_EXTENSION] = store
        return store


def deny(
    runtime: NodeRuntime,
    reason: str,
    *,
    peer: str | None,
    agreement: str | None = None,
    dataset: str | None = None,
    columns: list[str] | None = None,
    hint: str | None = None,
) -> NoReturn:
    """Record ``access.denied`` in the ledger, then raise :class:`AccessDenied`.

    Raises:
        AccessDenied: always.
    """
    runtime.audit.record(
        "access.denied",
        peer=peer,
        agreement=agreement,
        dataset=dataset,
        columns=columns,
        outcome="denied",
        detail={"reason": reason},
    )
    raise AccessDenied(reason, hint=hint)


def check(
    record: AgreementRecord,
    *,
    me: str,
    role: str,
    peer: str | None,
    mode: str,
    now: int,
    columns: Iterable[str] | None = None,
) -> None:
    """Decide on one agreement; returns only if access is granted.

    ``role`` is this node's side: ``provider`` (it holds the data) or ``consumer``.

    Raises:
        AccessDenied: with the first reason access is refused.
    """
    signed = record.signed
    if record.state == "revoked":
        raise AccessDenied(
            f"agreement {signed.id} was revoked at {utc_text(record.revoked_at)}",
            hint=_REVOKED_HINT,
        )
    if record.state != "active":
        raise AccessDenied(
            f"agreement {signed.id} is {record.state}, not active",
            hint=f"{signed.consumer} must countersign it and the provider import it",
        )
    mine = signed.provider if role == "provider" else signed.consumer
    theirs = signed.consumer if role == "provider" else signed.provider
    if mine != me:
        raise AccessDenied(f"agreement {signed.id} does not name this node ({me}) as {role}")
    if peer is not None and peer != theirs:
        other = "consumer" if role == "provider" else "provider"
        raise AccessDenied(f"agreement {signed.id} names {theirs} as {other}, not {peer}")
    if now < signed.valid_from:
        raise AccessDenied(
            f"agreement {signed.id} is not valid until {utc_text(signed.valid_from)}"
        )
    if now >= signed.valid_until:
        raise AccessDenied(
            f"agreement {signed.id} expired at {utc_text(signed.valid_until)}", hint=_EXPIRED_HINT
        )
    if mode not in signed.modes:
        raise AccessDenied(
            f"agreement {signed.id} does not allow mode {mode!r} (allows {', '.join(signed.modes)})"
        )
    if columns is not None:
        outside = sorted(set(columns) - set(signed.shared_columns))
        if outside:
            raise AccessDenied(
                f"columns not granted by agreement {signed.id}: {', '.join(outside)}",
                hint=f"the agreement shares: {', '.join(signed.shared_columns)}",
            )


def authorize(
    runtime: NodeRuntime,
    agreement_id: str,
    *,
    mode: str,
    role: str,
    peer: str | None = None,
    columns: list[str] | None = None,
) -> AgreementRecord:
    """Look up and check an agreement, recording any refusal.

    Raises:
        AccessDenied: refused (and recorded as ``access.denied``).
    """
    try:
        record = agreements_of(runtime).get(agreement_id)
    except AgreementError as e:
        deny(runtime, str(e), peer=peer, agreement=agreement_id, columns=columns, hint=e.hint)
    try:
        check(
            record,
            me=runtime.department,
            role=role,
            peer=peer,
            mode=mode,
            now=int(time.time()),
            columns=columns,
        )
    except AccessDenied as e:
        deny(
            runtime,
            str(e),
            peer=peer,
            agreement=agreement_id,
            dataset=record.signed.dataset,
            columns=columns,
            hint=e.hint,
        )
    return record


def recheck(runtime: NodeRuntime, agreement_id: str) -> None:
    """Re-read the agreement's state and window during a long operation.

    Raises:
        AccessDenied: it was revoked or expired meanwhile (not recorded here;
            the caller records the aborted operation).
    """
    record = agreements_of(runtime).get(agreement_id)
    if record.state == "revoked":
        raise AccessDenied(
            f"agreement {agreement_id} was revoked at {utc_text(record.revoked_at)}",
            hint=_REVOKED_HINT,
        )
    if int(time.time()) >= record.signed.valid_until:
        raise AccessDenied(
            f"agreement {agreement_id} expired at {utc_text(record.signed.valid_until)}",
            hint=_EXPIRED_HINT,
        )
