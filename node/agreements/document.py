"""The agreement document: canonical JSON, signed by the provider, countersigned by the consumer.

An agreement ``A`` is the canonical JSON object::

    {"v": 1, "type": "fednode.agreement", "id": "agr-<32 hex>", "federation": str,
     "provider": dept, "consumer": dept, "dataset": name,
     "purpose": {"code": str, "text": str},
     "valid_from": unix s, "valid_until": unix s,
     "modes": sorted subset of ["aggregate", "federated", "transfer"],
     "columns": {name: {"treatment": str, "params": {...}}}, "created": unix s}

The signed file is ``{"agreement": A, "provider_signature": b64, "consumer_signature": b64}``
(the consumer's signature absent until it countersigns), where

* ``provider_signature`` = Ed25519 by the provider over ``dumps(A)``;
* ``consumer_signature`` = Ed25519 by the consumer over
  ``dumps({"agreement": A, "provider_signature": <b64>})``, so the
  countersignature covers exactly the provider-signed document.

Invariant: a :class:`SignedAgreement` parsed from bytes is well-formed;
signatures are checked separately by :func:`verify`, which raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.canonical import dumps, loads
from ledger.errors import LedgerError
from node.catalog.treatments import validate_spec
from node.errors import AgreementError, IdentityError
from node.identity.keys import verify_ed25519

__all__ = ["MODES", "SignedAgreement", "is_agreement_id", "new_agreement", "validate_document"]

MODES = ("aggregate", "federated", "transfer")
_ID = re.compile(r"^agr-[0-9a-f]{32}$")
_KEYS = {
    "v",
    "type",
    "id",
    "federation",
    "provider",
    "consumer",
    "dataset",
    "purpose",
    "valid_from",
    "valid_until",
    "modes",
    "columns",
    "created",
}


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise AgreementError(f"agreement is malformed: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_document(doc: Any) -> None:
    """Check an agreement object's shape and values.

    Raises:
        AgreementError: a field is missing, extra, of the wrong type or out of range.
    """
    _need(isinstance(doc, dict), "not an object")
    _need(set(doc) == _KEYS, f"fields must be exactly {sorted(_KEYS)}, got {sorted(doc)}")
    _need(doc["v"] == 1 and doc["type"] == "fednode.agreement", "unknown version or type")
    _need(is_agreement_id(doc["id"]), "id must be agr-<32 hex>")
    for name in ("federation", "provider", "consumer", "dataset"):
        _need(isinstance(doc[name], str) and bool(doc[name]), f"{name} must be a non-empty string")
    _need(doc["provider"] != doc["consumer"], "provider and consumer must differ")
    purpose = doc["purpose"]
    _need(
        isinstance(purpose, dict)
        and set(purpose) == {"code", "text"}
        and all(isinstance(purpose[k], str) for k in purpose)
        and bool(purpose["code"]),
        "purpose must be {code, text} strings with a non-empty code",
    )
    for name in ("valid_from", "valid_until", "created"):
        _need(_is_int(doc[name]) and doc[name] >= 0, f"{name} must be a unix time")
    _need(doc["valid_until"] > doc["valid_from"], "valid_until must be after valid_from")
    modes = doc["modes"]
    _need(
        isinstance(modes, list)
        and bool(modes)
        and all(m in MODES for m in modes)
        and modes == sorted(set(modes)),
        f"modes must be a sorted, non-empty list drawn from {MODES}",
    )
    columns = doc["columns"]
    _need(isinstance(columns, dict) and bool(columns), "columns must name at least one column")
    for name, spec in columns.items():
        validate_spec(name, spec)


def new_agreement(
    *,
    federation: str,
    provider: str,
    consumer: str,
    dataset: str,
    purpose_code: str,
    purpose_text: str,
    valid_from: int,
    valid_until: int,
    modes: list[str],
    columns: Mapping[str, Mapping[str, Any]],
    created: int,
) -> dict[str, Any]:
    """Build and validate a fresh agreement with a random id.

    Raises:
        AgreementError: any field is invalid.
    """
    doc: dict[str, Any] = {
        "v": 1,
        "type": "fednode.agreement",
        "id": "agr-" + os.urandom(16).hex(),
        "federation": federation,
        "provider": provider,
        "consumer": consumer,
        "dataset": dataset,
        "purpose": {"code": purpose_code, "text": purpose_text},
        "valid_from": valid_from,
        "valid_until": valid_until,
        "modes": sorted(set(modes)),
        "columns": {
            name: {"treatment": spec["treatment"], "params": dict(spec.get("params", {}))}
            for name, spec in columns.items()
        },
        "created": created,
    }
    validate_document(doc)
    return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise AgreementError(f"agreement {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AgreementError(f"agreement {what} is not base64") from e


@dataclass(frozen=True)
class SignedAgreement:
    """An agreement with the provider's signature and, once countersigned, the consumer's."""

    doc: dict[str, Any]
    provider_signature: bytes
    consumer_signature: bytes | None = None

    # --- fields

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def provider(self) -> str:
        return str(self.doc["provider"])

    @property
    def consumer(self) -> str:
        return str(self.doc["consumer"])

    @property
    def dataset(self) -> str:
        return str(self.doc["dataset"])

    @property
    def modes(self) -> list[str]:
        return list(self.doc["modes"])

    @property
    def valid_from(self) -> int:
        return int(self.doc["valid_from"])

    @property
    def valid_until(self) -> int:
        return int(self.doc["valid_until"])

    @property
    def columns(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["columns"])

    @property
    def shared_columns(self) -> list[str]:
        """Columns that leave the provider (every named column not dropped), sorted."""
        return sorted(n for n, s in self.columns.items() if s["treatment"] != "drop")

    @property
    def purpose(self) -> str:
        purpose = self.doc["purpose"]
        return f"{purpose['code']}: {purpose['text']}" if purpose["text"] else purpose["code"]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(dumps(self.doc)).hexdigest()

    # --- signing

    @classmethod
    def sign(cls, doc: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> SignedAgreement:
        """Sign ``doc`` as its provider.

        Raises:
            AgreementError: the document is malformed.
        """
        validate_document(doc)
        return cls(doc, key.sign(dumps(doc)))

    def _countersign_message(self) -> bytes:
        return dumps({"agreement": self.doc, "provider_signature": _b64(self.provider_signature)})

    def countersign(self, key: ed25519.Ed25519PrivateKey) -> SignedAgreement:
        """Return a copy countersigned by the consumer's key."""
        return SignedAgreement(
            self.doc, self.provider_signature, key.sign(self._countersign_message())
        )

    def verify(self, provider_public: bytes, consumer_public: bytes | None) -> None:
        """Verify the provider's signature, and the consumer's when a key is given.

        Raises:
            AgreementError: a signature is missing or does not verify.
        """
        try:
            verify_ed25519(
                provider_public,
                self.provider_signature,
                dumps(self.doc),
                what=f"agreement {self.id} by {self.provider}",
            )
        except IdentityError as e:
            raise AgreementError(
                f"provider signature on agreement {self.id} does not verify under "
                f"{self.provider}'s key"
            ) from e
        if consumer_public is None:
            return
        if self.consumer_signature is None:
            raise AgreementError(
                f"agreement {self.id} is not countersigned by {self.consumer}",
                hint=f"{self.consumer} must run 'fednode agreement countersign'",
            )
        try:
            verify_ed25519(
                consumer_public,
                self.consumer_signature,
                self._countersign_message(),
                what=f"agreement {self.id} countersignature by {self.consumer}",
            )
        except IdentityError as e:
            raise AgreementError(
                f"consumer countersignature on agreement {self.id} does not verify under "
                f"{self.consumer}'s key"
            ) from e

    # --- bytes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "agreement": self.doc,
            "provider_signature": _b64(self.provider_signature),
        }
        if self.consumer_signature is not None:
            out["consumer_signature"] = _b64(self.consumer_signature)
        return out

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> SignedAgreement:
        """Parse the signed-file object (signatures not yet verified).

        Raises:
            AgreementError: the object is malformed.
        """
        if not isinstance(obj, dict) or not {"agreement", "provider_signature"} <= set(obj):
            raise AgreementError("agreement file must hold 'agreement' and 'provider_signature'")
        extra = set(obj) - {"agreement", "provider_signature", "consumer_signature"}
        if extra:
            raise AgreementError(f"agreement file has unknown fields {sorted(extra)}")
        validate_document(obj["agreement"])
        consumer = obj.get("consumer_signature")
        return cls(
            obj["agreement"],
            _unb64(obj["provider_signature"], "provider_signature"),
            None if consumer is None else _unb64(consumer, "consumer_signature"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedAgreement:
        """Parse a signed agreement file (canonical JSON).

        Raises:
            AgreementError: not canonical JSON, or malformed.
        """
        try:
            obj = loads(data)
        except LedgerError as e:
            raise AgreementError(f"agreement file is not canonical JSON: {e}") from e
        return cls.from_json(obj)


def is_agreement_id(value: object) -> bool:
    """Whether ``value`` has the shape of an agreement id (``agr-`` and 32 hex digits).

    Checked wherever an id arrives from a peer, before it is looked up,
    recorded or echoed.
    """
    return isinstance(value, str) and bool(_ID.match(value))
