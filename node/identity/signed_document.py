"""Small signed statements one department hands another: ``{KIND: body, "signature": b64}``.

The body is a flat JSON object with ``"v": 1`` and a ``"type"`` naming what it
is (``fednode.receipt``, ``fednode.revocation``), and the signature is Ed25519
over its canonical JSON encoding. The type keeps one kind of statement from
being presented as another; the fixed field set keeps a verifier from
accepting fields it does not understand.

Invariant: :func:`open_document` returns a body only if the document has
exactly the expected shape and field types, the version and type match, and
the signature verifies under the given key.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.canonical import dumps
from node.errors import IdentityError, NodeError
from node.identity.keys import verify_ed25519

__all__ = ["open_document", "sign_document"]


def sign_document(
    signing_key: ed25519.Ed25519PrivateKey, kind: str, body: dict[str, Any]
) -> dict[str, Any]:
    """``{kind: body, "signature": base64(Ed25519 over dumps(body))}``."""
    signature = signing_key.sign(dumps(body))
    return {kind: body, "signature": base64.b64encode(signature).decode()}


def open_document(
    document: Any,
    *,
    kind: str,
    type_name: str,
    fields: dict[str, type],
    public_raw: bytes,
    signer: str,
    error: type[NodeError],
) -> dict[str, Any]:
    """Check a signed document's shape, field types, version, type and signature.

    ``signer`` names the key's owner in the error message.

    Raises:
        error: any check fails.
    """
    if not isinstance(document, dict) or set(document) != {kind, "signature"}:
        raise error(f"{kind} must be an object with exactly '{kind}' and 'signature'")
    body = document[kind]
    if not isinstance(body, dict) or set(body) != set(fields):
        raise error(f"{kind} body must have exactly the fields {sorted(fields)}")
    for name, expected in fields.items():
        if not isinstance(body[name], expected) or isinstance(body[name], bool):
            raise error(f"{kind} field {name!r} must be {expected.__name__}")
    if body["v"] != 1 or body["type"] != type_name:
        raise error(f"unknown {kind} version/type {body['v']!r}/{body['type']!r}")
    try:
        signature = base64.b64decode(str(document["signature"]), validate=True)
    except (binascii.Error, ValueError) as e:
        raise error(f"{kind} signature is not base64") from e
    try:
        verify_ed25519(public_raw, signature, dumps(body), what=type_name)
    except IdentityError as e:
        raise error(f"{kind} signature does not verify under {signer}'s key") from e
    return body
