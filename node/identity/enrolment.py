"""Enrolment requests: what a department sends the federation authority.

``fednode init`` writes ``request.json``, a canonical JSON document signed by
the department's new Ed25519 key. It carries the department id, display
name, endpoint, the Ed25519 and HPKE public keys and a PKCS#10 request for
the TLS certificate. The Ed25519 signature proves the department holds the
signing key it asks the directory to publish; the CSR's own signature proves
it holds the TLS key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ledger import canonical
from ledger.errors import CanonicalJSONError
from node.errors import ConfigError, IdentityError
from node.identity import certs, keys

__all__ = ["EnrolmentRequest", "make_request", "parse_request"]


@dataclass(frozen=True)
class EnrolmentRequest:
    federation: str
    department: str
    display_name: str
    endpoint: str
    ed25519_public: bytes
    hpke_public: bytes
    csr: x509.CertificateSigningRequest


def make_request(
    *,
    federation: str,
    department: str,
    display_name: str,
    endpoint: str,
    tls_key: ec.EllipticCurvePrivateKey,
    signing_key: ed25519.Ed25519PrivateKey,
    hpke_public: bytes,
) -> tuple[bytes, bytes]:
    """Build the CSR (PEM) and the signed enrolment request (canonical JSON)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(x509.NameOID.COMMON_NAME, department),
                    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, federation),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(certs.department_uri(federation, department)),
                    x509.DNSName(certs.dns_name(federation, department)),
                ]
            ),
            critical=False,
        )
        .sign(tls_key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    body = {
        "v": 1,
        "type": "fednode.enrolment",
        "federation": federation,
        "department": department,
        "display_name": display_name,
        "endpoint": endpoint,
        "ed25519_public": base64.b64encode(keys.ed25519_public_raw(signing_key)).decode(),
        "hpke_public": base64.b64encode(hpke_public).decode(),
        "csr": csr_pem.decode(),
    }
    signature = signing_key.sign(canonical.dumps(body))
    request = canonical.dumps({"request": body, "signature": base64.b64encode(signature).decode()})
    return csr_pem, request


_FIELDS = frozenset(
    {
        "v",
        "type",
        "federation",
        "department",
        "display_name",
        "endpoint",
        "ed25519_public",
        "hpke_public",
        "csr",
    }
)


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise IdentityError(f"enrolment request field '{key}' must be a string")
    return value


def _b64(doc: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_str(doc, key), validate=True)
    except (binascii.Error, ValueError) as e:
        raise IdentityError(f"enrolment request field '{key}' is not base64") from e


def _checked(check: Callable[..., str], *args: str) -> str:
    """Run a syntax check from :mod:`certs`, reporting its failure as an IdentityError."""
    try:
        return check(*args)
    except ConfigError as e:
        raise IdentityError(f"enrolment request: {e}", hint=e.hint) from e


def _check_csr(csr: x509.CertificateSigningRequest, federation: str, department: str) -> None:
    """The CSR must hold a P-256 key and name no identity but the request's."""
    try:
        public = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"CSR key cannot be read: {e}") from e
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise IdentityError(
            f"CSR key is {type(public).__name__}, not ECDSA P-256",
            hint="make the request with 'fednode init' or 'fednode request'",
        )
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    except ValueError as e:
        raise IdentityError(f"CSR extensions are malformed: {e}") from e
    expected = {
        certs.department_uri(federation, department),
        certs.dns_name(federation, department),
    }
    named = {str(name.value) for name in san}
    if not named <= expected:
        raise IdentityError(
            f"CSR names {sorted(named - expected)}, not only department {department!r}"
        )


def parse_request(data: bytes) -> EnrolmentRequest:
    """Verify and parse an enrolment request.

    Raises:
        IdentityError: malformed (including unknown fields, a bad id, display
            name or endpoint), bad Ed25519 signature, bad CSR signature, a CSR
            key that is not ECDSA P-256, or a CSR whose identity differs from
            the request's.
    """
    try:
        outer = canonical.loads(data)
    except CanonicalJSONError as e:
        raise IdentityError(f"malformed enrolment request: {e}") from e
    if not isinstance(outer, dict) or set(outer) != {"request", "signature"}:
        raise IdentityError("enrolment request must hold exactly 'request' and 'signature'")
    body = outer["request"]
    if not isinstance(body, dict) or set(body) != _FIELDS:
        raise IdentityError(
            f"enrolment request body must have exactly the fields {sorted(_FIELDS)}"
        )
    if body["v"] != 1 or body["type"] != "fednode.enrolment":
        raise IdentityError(
            f"unknown enrolment request version/type {body['v']!r}/{body['type']!r}"
        )
    signature = _b64(outer, "signature")
    ed_pub = _b64(body, "ed25519_public")
    hpke_pub = _b64(body, "hpke_public")
    keys.verify_ed25519(ed_pub, signature, canonical.dumps(body), what="enrolment request")
    keys.hpke_public_from_bytes(hpke_pub)
    federation = _checked(certs.check_identifier, _str(body, "federation"), "federation")
    department = _checked(certs.check_identifier, _str(body, "department"), "department")
    display_name = _checked(certs.check_display_name, _str(body, "display_name"))
    endpoint = _checked(certs.check_endpoint, _str(body, "endpoint"))
    try:
        csr = x509.load_pem_x509_csr(_str(body, "csr").encode())
    except ValueError as e:
        raise IdentityError("enrolment request holds a malformed CSR") from e
    _check_csr(csr, federation, department)
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature does not verify")
    return EnrolmentRequest(
        federation=federation,
        department=department,
        display_name=display_name,
        endpoint=endpoint,
        ed25519_public=ed_pub,
        hpke_public=hpke_pub,
        csr=csr,
    )
