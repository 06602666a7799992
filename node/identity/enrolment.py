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
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ledger import canonical
from ledger.errors import CanonicalJSONError
from node.errors import IdentityError
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


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise IdentityError(f"enrolment request field '{key}' must be a string")
    return value


def parse_request(data: bytes) -> EnrolmentRequest:
    """Verify and parse an enrolment request.

    Raises:
        IdentityError: malformed, bad Ed25519 signature, bad CSR signature, or
            a CSR whose identity differs from the request's.
    """
    try:
        outer = canonical.loads(data)
        body = outer["request"]
        signature = base64.b64decode(outer["signature"], validate=True)
        ed_pub = base64.b64decode(_str(body, "ed25519_public"), validate=True)
        hpke_pub = base64.b64decode(_str(body, "hpke_public"), validate=True)
    except (CanonicalJSONError, KeyError, TypeError, binascii.Error) as e:
        raise IdentityError(f"malformed enrolment request: {e}") from e
    if body.get("v") != 1 or body.get("type") != "fednode.enrolment":
        raise IdentityError("unknown enrolment request version")
    keys.verify_ed25519(ed_pub, signature, canonical.dumps(body), what="enrolment request")
    keys.hpke_public_from_bytes(hpke_pub)
    try:
        csr = x509.load_pem_x509_csr(_str(body, "csr").encode())
    except ValueError as e:
        raise IdentityError("enrolment request holds a malformed CSR") from e
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature does not verify")
    federation = certs.check_identifier(_str(body, "federation"), "federation")
    department = certs.check_identifier(_str(body, "department"), "department")
    return EnrolmentRequest(
        federation=federation,
        department=department,
        display_name=_str(body, "display_name"),
        endpoint=_str(body, "endpoint"),
        ed25519_public=ed_pub,
        hpke_public=hpke_pub,
        csr=csr,
    )
