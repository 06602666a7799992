"""The agreement workflow between two operators on different machines.

1. The provider's operator runs ``fednode agreement create``: the node checks
   the consumer is in the directory and the treatments fit the dataset, signs,
   stores the agreement as ``proposed`` and writes the signed file.
2. The consumer's operator runs ``fednode agreement countersign FILE``: the
   node verifies the provider's signature against the directory, countersigns,
   stores it as ``active`` and, with ``--push``, hands it to the provider over
   the Exchange service.
3. Without a push, the provider's operator runs ``fednode agreement import
   FILE`` with the countersigned file.

Either way the provider activates only a document identical to the one it
proposed, with both signatures verified. Every decision is recorded.

A revocation reason is free text and may name people. Each node keeps it in
two places: its ledger (as erasable commitments, :data:`REVOCATION_SENSITIVE`)
and its agreement store. ``fednode ledger erase`` on a ledger field that holds
it erases the store's copy too (:func:`erase_reason`), on that node only: the
other party keeps its own ledger and store, and its operator erases them there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.policy import agreements_of
from node.agreements.store import AgreementRecord
from node.catalog import treatments
from node.catalog.loader import catalog_of
from node.errors import AgreementError, CatalogError
from node.timefmt import utc_text

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "MAX_REASON_LEN",
    "REVOCATION_EVENTS",
    "REVOCATION_SENSITIVE",
    "accept_countersigned",
    "check_reason",
    "countersign",
    "create",
    "erase_reason",
    "personal_in_plain",
    "revoke",
]

#: Longest revocation reason, in characters. The reason travels to the other
#: party and enters both ledgers, so a party cannot make either ledger carry
#: megabytes of text.
MAX_REASON_LEN = 500
#: Ledger fields of an ``agreement.revoked`` entry recorded as erasable
#: commitments: the reason, and the other party's signed notice that repeats it.
REVOCATION_SENSITIVE = ("detail.reason", "detail.notice")
#: Ledger events whose :data:`REVOCATION_SENSITIVE` fields repeat the reason
#: the agreement store keeps: the revocation itself, and the notice sent.
REVOCATION_EVENTS = ("agreement.revoked", "agreement.revocation_sent")


def create(
    runtime: NodeRuntime,
    *,
    consumer: str,
    dataset: str,
    purpose_code: str,
    purpose_text: str,
    valid_from: int | None,
    valid_until: int,
    modes: list[str],
    columns: dict[str, dict[str, Any]],
) -> AgreementRecord:
    """Draw up, sign and store a new agreement as its provider.

    Raises:
        UnknownPeerError: the consumer is not in the directory.
        CatalogError: the dataset is not in the catalog, or lacks a named column.
        AgreementError: a field is invalid, or a treatment does not fit the column.
    """
    runtime.directory.get(consumer)
    info = catalog_of(runtime).get(dataset)
    unknown = sorted(set(columns) - set(info.schema.names))
    if unknown:
        # Most often a typo: name the dataset's real columns rather than blame the dataset.
        raise CatalogError(
            f"dataset {dataset} has no column {', '.join(unknown)}; "
            f"its columns are {', '.join(info.schema.names)}",
            hint=f"check the spelling, or see 'fednode dataset show {dataset}'",
        )
    now = int(time.time())
    doc = new_agreement(
        federation=runtime.config.federation,
        provider=runtime.department,
        consumer=consumer,
        dataset=dataset,
        purpose_code=purpose_code,
        purpose_text=purpose_text,
        valid_from=now if valid_from is None else valid_from,
        valid_until=valid_until,
        modes=modes,
        columns=columns,
        created=now,
    )
    treatments.treated_schema(info.schema, doc["columns"])
    signed = SignedAgreement.sign(doc, runtime.signing_key)
    record = agreements_of(runtime).add_proposed(signed)
    _record(
        runtime,
        "agreement.signed",
        signed,
        detail={
            "modes": signed.modes,
            "valid_from": signed.valid_from,
            "valid_until": signed.valid_until,
            "columns": signed.columns,
        },
    )
    return record


def personal_in_plain(runtime: NodeRuntime, signed: SignedAgreement) -> list[str]:
    """Columns labelled ``personal`` in the catalog that ``signed`` shares ``plain``, sorted.

    Not an error: an agreement may need them, but an operator should look
    again before sending such a file.

    Raises:
        CatalogError: the dataset is no longer in the catalog.
    """
    labels = catalog_of(runtime).get(signed.dataset).labels
    return sorted(
        name
        for name, spec in signed.columns.items()
        if spec["treatment"] == "plain" and labels.get(name) == "personal"
    )


def countersign(runtime: NodeRuntime, signed: SignedAgreement) -> AgreementRecord:
    """Verify a provider-signed agreement naming this node as consumer, countersign and store it.

    Raises:
        AgreementError: it names another consumer, is in another federation,
            the provider's signature does not verify, or it has expired.
        UnknownPeerError: the provider is not in the directory.
    """
    if signed.consumer != runtime.department:
        raise AgreementError(
            f"agreement {signed.id} is for consumer {signed.consumer}, this node is "
            f"{runtime.department}",
            hint=f"countersign it on {signed.consumer}'s node (check --home)",
        )
    if signed.doc["federation"] != runtime.config.federation:
        raise AgreementError(
            f"agreement {signed.id} belongs to federation {signed.doc['federation']}"
        )
    signed.verify(runtime.directory.get(signed.provider).ed25519_public, None)
    valid_until = int(signed.doc["valid_until"])
    if valid_until <= time.time():
        # It could never be used, and its provider would report it as expired.
        raise AgreementError(
            f"agreement {signed.id} expired at {utc_text(valid_until)}; it cannot be countersigned",
            hint=f"ask {signed.provider} for a new agreement with a later --valid-until",
        )
    both = signed.countersign(runtime.signing_key)
    record = agreements_of(runtime).activate(both)
    _record(runtime, "agreement.countersigned", signed)
    return record


def accept_countersigned(
    runtime: NodeRuntime, signed: SignedAgreement, *, submitted_by: str | None = None
) -> AgreementRecord:
    """Take in a countersigned agreement (import, or a consumer's push) and activate it.

    On the provider the document must be one this node proposed. On the
    consumer (re-importing its own countersigned copy) both signatures must verify.

    A consumer's push of an agreement this provider revoked before it was
    countersigned returns the revoked record (the consumer then revokes its
    copy); an import of one is refused.

    Raises:
        AgreementError: signatures fail, the node is not a party, the provider
            never proposed it, the submitter is not its consumer, or (import)
            it was revoked.
    """
    me = runtime.department
    if me not in (signed.provider, signed.consumer):
        raise AgreementError(f"agreement {signed.id} does not name this node ({me})")
    if submitted_by is not None and submitted_by != signed.consumer:
        raise AgreementError(
            f"agreement {signed.id} was submitted by {submitted_by}, not its consumer"
        )
    signed.verify(
        runtime.directory.get(signed.provider).ed25519_public,
        runtime.directory.get(signed.consumer).ed25519_public,
    )
    store = agreements_of(runtime)
    held = store.find(signed.id)
    if me == signed.provider and held is None:
        raise AgreementError(
            f"this node never drew up agreement {signed.id}",
            hint="only agreements created here with 'fednode agreement create' can be activated",
        )
    if submitted_by is not None and held is not None and held.state == "revoked":
        # Revoked before the consumer countersigned: the consumer held no copy
        # to notify then, so its push is where it learns; the answer says so
        # and it revokes its copy (see agreement.countersign).
        return held
    record = store.activate(signed)
    _record(runtime, "agreement.activated", signed)
    return record


def revoke(runtime: NodeRuntime, agreement_id: str, reason: str) -> AgreementRecord:
    """Revoke an agreement here, effective immediately (then see
    :func:`node.agreements.revocation.send_notice` to tell the other party).

    Raises:
        AgreementError: unknown or already revoked, or the reason is empty or
            longer than :data:`MAX_REASON_LEN`.
    """
    check_reason(reason)
    record = agreements_of(runtime).revoke(agreement_id, reason)
    signed = record.signed
    # A reason is free text an operator types, so it may name people: it enters
    # the ledger as a commitment that 'fednode ledger erase' can shred.
    _record(
        runtime,
        "agreement.revoked",
        signed,
        detail={"reason": reason},
        sensitive=REVOCATION_SENSITIVE[:1],
    )
    return record


def erase_reason(
    runtime: NodeRuntime, entry: Mapping[str, Any], path: str
) -> AgreementRecord | None:
    """Erase the agreement store's copy of the reason that ledger field ``path`` of ``entry`` holds.

    Called before the ledger erases its own value (``ledger.erase``), so an
    erasure cut short leaves the ledger's value in place and running it again
    finishes both; erasing here is idempotent. Only this node's store changes.

    Returns the record with its reason erased, or ``None`` when the field holds
    no revocation reason or this node holds no revoked agreement of that id.

    Raises:
        AgreementError, BusyError: the store could not finish the erasure (see
            :meth:`~node.agreements.store.AgreementStore.erase_reason`).
    """
    agreement = entry.get("agreement")
    if entry.get("event") not in REVOCATION_EVENTS or path not in REVOCATION_SENSITIVE:
        return None
    if not isinstance(agreement, str):
        return None
    store = agreements_of(runtime)
    record = store.find(agreement)
    if record is None or record.state != "revoked":
        return None
    return store.erase_reason(agreement)


def check_reason(reason: str) -> None:
    """Refuse an empty revocation reason, or one over :data:`MAX_REASON_LEN` characters.

    Raises:
        AgreementError: as above.
    """
    if not reason.strip():
        raise AgreementError("a revocation needs a reason", hint="pass --reason TEXT")
    if len(reason) > MAX_REASON_LEN:
        raise AgreementError(
            f"revocation reason is {len(reason)} characters, above {MAX_REASON_LEN}",
            hint="give a short reason; keep the full story in your case file",
        )


def _record(
    runtime: NodeRuntime,
    event: str,
    signed: SignedAgreement,
    *,
    detail: dict[str, object] | None = None,
    sensitive: tuple[str, ...] = (),
) -> None:
    """Record one step of an agreement's life, with the other party as the peer."""
    runtime.audit.record(
        event,
        peer=signed.consumer if signed.provider == runtime.department else signed.provider,
        agreement=signed.id,
        dataset=signed.dataset,
        columns=sorted(signed.columns),
        purpose=signed.purpose,
        digest=signed.digest,
        detail=detail,
        sensitive=sensitive,
    )
