"""A read-only view of the federation directory, for checking signatures offline.

The directory (``directory.json``) is canonical JSON
``{"directory": D, "signature": base64(ECDSA-P256-SHA256 over dumps(D))}``
signed by the federation CA. The ledger needs only each department's Ed25519
key, its witness role and the federation's ``witness_threshold``; this reader
takes exactly those, so the offline verifier does not depend on the node.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.canonical import dumps, loads
from ledger.checkpoint import log_name
from ledger.errors import LedgerError

__all__ = ["DirectoryView", "LedgerDirectoryError", "parse_directory"]


class LedgerDirectoryError(LedgerError):
    """The federation directory is malformed or its CA signature does not verify."""


@dataclass(frozen=True)
class DirectoryView:
    """The parts of a federation directory the ledger checks signatures with."""

    federation: str
    serial: int
    witness_threshold: int
    keys: Mapping[str, Ed25519PublicKey]
    witnesses: frozenset[str]
    signature_checked: bool

    def origin(self, department: str) -> str:
        """Return the log origin of ``department``."""
        return log_name(self.federation, department)

    def witness_keys(self, exclude: str) -> dict[str, Ed25519PublicKey]:
        """Return ``{witness key name: key}`` for every witness other than ``exclude``."""
        return {
            log_name(self.federation, dept): self.keys[dept]
            for dept in sorted(self.witnesses)
            if dept != exclude
        }


def _field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LedgerDirectoryError(f"directory field {name!r} must be {kind.__name__}")
    return value


def parse_directory(data: bytes, ca_pem: bytes | None = None) -> DirectoryView:
    """Parse ``directory.json`` and, given the CA certificate, check its signature.

    Raises:
        LedgerDirectoryError: the document is malformed, or ``ca_pem`` is given
            and the signature does not verify under it.
    """
    try:
        outer = loads(data)
    except LedgerError as e:
        raise LedgerDirectoryError(f"directory is not canonical JSON: {e}") from e
    if not isinstance(outer, dict) or not isinstance(outer.get("directory"), dict):
        raise LedgerDirectoryError("directory file must hold {'directory': ..., 'signature': ...}")
    body: dict[str, Any] = outer["directory"]
    if body.get("type") != "fednode.directory" or body.get("v") != 1:
        raise LedgerDirectoryError("directory has an unknown type or version")
    checked = False
    if ca_pem is not None:
        try:
            cert = x509.load_pem_x509_certificate(ca_pem)
            signature = base64.b64decode(_field(outer, "signature", str), validate=True)
            ca_key = cert.public_key()
            if not isinstance(ca_key, ec.EllipticCurvePublicKey):
                raise LedgerDirectoryError("the CA certificate does not hold an EC key")
            ca_key.verify(signature, dumps(body), ec.ECDSA(hashes.SHA256()))
        except (ValueError, binascii.Error, InvalidSignature) as e:
            raise LedgerDirectoryError("directory signature does not verify under the CA") from e
        checked = True
    keys: dict[str, Ed25519PublicKey] = {}
    witnesses = set()
    departments = _field(body, "departments", list)
    for dept in departments:
        if not isinstance(dept, dict):
            raise LedgerDirectoryError("directory department entries must be objects")
        dept_id = _field(dept, "id", str)
        try:
            raw = base64.b64decode(_field(dept, "ed25519_public", str), validate=True)
            keys[dept_id] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as e:
            raise LedgerDirectoryError(f"department {dept_id!r} has a malformed Ed25519 key") from e
        if dept.get("witness") is True:
            witnesses.add(dept_id)
    threshold = _field(body, "witness_threshold", int)
    if threshold < 0 or threshold > len(witnesses):
        raise LedgerDirectoryError(
            f"witness_threshold {threshold} is outside 0..{len(witnesses)} witnesses"
        )
    return DirectoryView(
        federation=_field(body, "federation", str),
        serial=_field(body, "serial", int),
        witness_threshold=threshold,
        keys=keys,
        witnesses=frozenset(witnesses),
        signature_checked=checked,
    )
