"""Signed share receipts (format fixed in the cross-subsystem formats note).

A receipt is ``{"receipt": R, "signature": base64(Ed25519 over dumps(R))}``
(see :mod:`node.identity.signed_document`).
The receiver makes it only after the trailer verified and the output file was
renamed into place; the sender checks it against the share it streamed and
keeps it in its ledger entry.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from node.errors import brief
from node.exchange.errors import ReceiptError
from node.identity.signed_document import open_document, sign_document

__all__ = ["MAX_RECEIPT_SKEW_S", "make_receipt", "verify_receipt"]

#: How far a receipt's time may be from the provider's clock: clock skew between
#: departments, plus the receipt's deadline.
MAX_RECEIPT_SKEW_S = 600

_FIELDS = {
    "v": int,
    "type": str,
    "share_id": str,
    "digest": str,
    "rows": int,
    "chunks": int,
    "sender": str,
    "recipient": str,
    "agreement": str,
    "time": int,
}


def make_receipt(
    signing_key: ed25519.Ed25519PrivateKey,
    *,
    share_id: bytes,
    digest: str,
    rows: int,
    chunks: int,
    sender: str,
    recipient: str,
    agreement: str,
    time: int,
) -> dict[str, Any]:
    """Build and sign a receipt."""
    body: dict[str, Any] = {
        "v": 1,
        "type": "fednode.receipt",
        "share_id": share_id.hex(),
        "digest": digest,
        "rows": rows,
        "chunks": chunks,
        "sender": sender,
        "recipient": recipient,
        "agreement": agreement,
        "time": time,
    }
    return sign_document(signing_key, "receipt", body)


def verify_receipt(receipt: Any, public_raw: bytes, expected: dict[str, Any]) -> None:
    """Check a receipt's shape, its signature, and that its fields equal ``expected``.

    Raises:
        ReceiptError: the receipt is malformed, badly signed, or a field differs.
    """
    claimed = receipt.get("receipt") if isinstance(receipt, dict) else None
    recipient = claimed.get("recipient") if isinstance(claimed, dict) else None
    body = open_document(
        receipt,
        kind="receipt",
        type_name="fednode.receipt",
        fields=_FIELDS,
        public_raw=public_raw,
        signer=brief(recipient),
        error=ReceiptError,
    )
    for name, value in expected.items():
        if body.get(name) != value:
            raise ReceiptError(f"receipt {name} is {brief(body.get(name))}, expected {value!r}")
    # Auditors date a share's receipt by this time (ledger/verify.py), so a
    # consumer must not be able to date it at will.
    stated, now = body.get("time"), time.time()
    if not isinstance(stated, int) or abs(stated - now) > MAX_RECEIPT_SKEW_S:
        raise ReceiptError(
            f"receipt time {brief(stated)} is more than {MAX_RECEIPT_SKEW_S} s from this "
            "node's clock",
            hint="check both nodes' clocks (NTP)",
        )
