"""Telling the other party of an agreement that it was revoked.

Either party may revoke an agreement; it takes effect on the revoking node at
once (see :func:`node.agreements.workflow.revoke`). The revoking node then
sends the other party a notice over ``Exchange.Revoke``:

``{"revocation": N, "signature": base64(Ed25519 over dumps(N))}`` with
``N = {"v": 1, "type": "fednode.revocation", "agreement": id, "digest":
the agreement's digest, "by": the revoking department, "reason": text,
"time": unix seconds}``.

The other party checks the notice (signed by the department that called, a
party of this exact agreement) and revokes its own copy, so its operator sees
the agreement as revoked and its node stops using it, instead of learning it
from a refused share. A notice that cannot be delivered (the peer is down)
changes nothing on the revoking side: the revocation is already in force
there, and the provider's refusal protects the data either way.

Invariant: :func:`accept_notice` revokes only an agreement that names both
this node and the caller, whose digest the notice repeats, on a notice
signed by the caller.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements.document import is_agreement_id
from node.agreements.policy import agreements_of
from node.agreements.store import AgreementRecord
from node.agreements.workflow import REVOCATION_SENSITIVE, check_reason
from node.errors import AgreementError, NodeError, brief
from node.exchange import convert
from node.identity.certs import IDENTIFIER
from node.identity.signed_document import open_document, sign_document
from protocols.fednode.v1 import exchange_pb2_grpc

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["NOTICE_DEADLINE_S", "accept_notice", "make_notice", "open_notice", "send_notice"]

#: How long the revoking node waits for the other party to take the notice.
NOTICE_DEADLINE_S = 10.0
_TYPE = "fednode.revocation"
_FIELDS: dict[str, type] = {
    "v": int,
    "type": str,
    "agreement": str,
    "digest": str,
    "by": str,
    "reason": str,
    "time": int,
}


def make_notice(
    signing_key: ed25519.Ed25519PrivateKey,
    *,
    agreement: str,
    digest: str,
    by: str,
    reason: str,
    time: int,
) -> dict[str, Any]:
    """Build and sign a revocation notice."""
    body: dict[str, Any] = {
        "v": 1,
        "type": _TYPE,
        "agreement": agreement,
        "digest": digest,
        "by": by,
        "reason": reason,
        "time": time,
    }
    return sign_document(signing_key, "revocation", body)


def open_notice(notice: Any, public_raw: bytes, signer: str) -> dict[str, Any]:
    """The notice's body, once its shape and its signature by ``signer`` are checked.

    Raises:
        AgreementError: malformed (a reason is empty or too long, see
            :func:`~node.agreements.workflow.check_reason`), or not signed by
            ``signer``'s key.
    """
    body = open_document(
        notice,
        kind="revocation",
        type_name=_TYPE,
        fields=_FIELDS,
        public_raw=public_raw,
        signer=signer,
        error=AgreementError,
    )
    # Fields a forger chooses are checked for shape before anything looks them up or quotes them.
    if not is_agreement_id(body["agreement"]):
        raise AgreementError(f"revocation notice names no agreement id: {brief(body['agreement'])}")
    if not IDENTIFIER.match(body["by"]):
        raise AgreementError(f"revocation notice is by no department: {brief(body['by'])}")
    check_reason(body["reason"])
    return body


def accept_notice(runtime: NodeRuntime, caller: str, notice: Any) -> AgreementRecord:
    """Revoke this node's copy of an agreement on a notice from ``caller``, the other party.

    Idempotent: a notice for an agreement already revoked here returns it unchanged.

    Raises:
        AgreementError: the notice is malformed or not signed by ``caller``,
            names another signer, an unknown agreement, one that does not
            name both parties, or the wrong digest.
        DirectoryError: ``caller`` is not in the directory.
    """
    body = open_notice(notice, runtime.directory.get(caller).ed25519_public, caller)
    if body["by"] != caller:
        raise AgreementError(f"revocation notice is by {body['by']}, but {caller} sent it")
    store = agreements_of(runtime)
    record = store.get(body["agreement"])
    signed = record.signed
    parties = {signed.provider, signed.consumer}
    if caller not in parties or runtime.department not in parties or caller == runtime.department:
        raise AgreementError(f"agreement {signed.id} is not between {caller} and this node")
    if body["digest"] != signed.digest:
        raise AgreementError(f"revocation notice is for another version of agreement {signed.id}")
    if record.state == "revoked":
        return record
    reason = f"revoked by {caller}: {body['reason']}"
    record = store.revoke(signed.id, reason)
    runtime.audit.record(
        "agreement.revoked",
        peer=caller,
        agreement=signed.id,
        dataset=signed.dataset,
        purpose=signed.purpose,
        digest=signed.digest,
        detail={"reason": reason, "notice": notice},
        # The notice carries the same free-text reason, so both can be shredded.
        sensitive=REVOCATION_SENSITIVE,
    )
    return record


def send_notice(runtime: NodeRuntime, record: AgreementRecord, reason: str) -> str | None:
    """Notify the other party that this node revoked ``record``; ``None`` once it took it.

    Returns the reason the notice was not delivered otherwise. Either way the
    attempt is recorded in the ledger.
    """
    signed = record.signed
    peer = signed.consumer if signed.provider == runtime.department else signed.provider
    notice = make_notice(
        runtime.signing_key,
        agreement=signed.id,
        digest=signed.digest,
        by=runtime.department,
        reason=reason,
        time=int(time.time()),
    )
    failure: str | None = None
    try:
        stub = exchange_pb2_grpc.ExchangeStub(runtime.peer_channel(peer))
        stub.Revoke(convert.revocation_to_proto(notice), timeout=NOTICE_DEADLINE_S)
    except NodeError as e:
        failure = str(e)
    except Exception as e:  # noqa: BLE001 -- grpc.RpcError and transport faults: reported, not raised
        details = getattr(e, "details", None)
        failure = str(details() if callable(details) else e)
    runtime.audit.record(
        "agreement.revocation_sent",
        peer=peer,
        agreement=signed.id,
        outcome="ok" if failure is None else "error",
        detail={"notice": notice} if failure is None else {"reason": failure},
        # The notice repeats the operator's free-text reason (see REVOCATION_SENSITIVE).
        sensitive=("detail.notice",) if failure is None else (),
    )
    return failure
