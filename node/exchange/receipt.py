"""Signed share receipts (format fixed in the cross-subsystem formats note).

A receipt is ``{"receipt": R, "signature": base64(Ed25519 over dumps(R))}``.
The receiver makes it only after the trailer verified and the output file was
renamed into place; the sender checks it against the share it streamed and
keeps it in its ledger entry.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.canonical import dumps
from node.errors import IdentityError
from node.exchange.errors import ReceiptError
from node.identity.keys import verify_ed25519

__all__ = ["make_receipt", "verify_receipt"]

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
    signature = signing_key.sign(dumps(body))
    return {"receipt": body, "signature": base64.b64encode(signature).decode()}


def verify_receipt(receipt: Any, public_raw: bytes, expected: dict[str, Any]) -> None:
    """Check a receipt's shape, its signature, and that its fields equal ``expected``.

    Raises:
        ReceiptError: the receipt is malformed, badly signed, or a field differs.
    """
    if not isinstance(receipt, dict) or set(receipt) != {"receipt", "signature"}:
        raise ReceiptError("receipt must be an object with exactly 'receipt' and 'signature'")
    body = receipt["receipt"]
    if not isinstance(body, dict) or set(body) != set(_FIELDS):
        raise ReceiptError(f"receipt body must have exactly the fields {sorted(_FIELDS)}")
    for name, kind in _FIELDS.items():
        if not isinstance(body[name], kind) or isinstance(body[name], bool):
            raise ReceiptError(f"receipt field {name!r} must be {kind.__name__}")
    if body["v"] != 1 or body["type"] != "fednode.receipt":
        raise ReceiptError(f"unknown receipt version/type {body['v']!r}/{body['type']!r}")
    try:
        signature = base64.b64decode(str(receipt["signature"]), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ReceiptError("receipt signature is not base64") from e
    try:
        verify_ed25519(public_raw, signature, dumps(body), what="share receipt")
    except IdentityError as e:
        raise ReceiptError(
            f"receipt signature does not verify under {body['recipient']}'s key"
        ) from e
    for name, value in expected.items():
        if body.get(name) != value:
            raise ReceiptError(f"receipt {name} is {body.get(name)!r}, expected {value!r}")
