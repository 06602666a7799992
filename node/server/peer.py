"""Who is calling: the department named by the peer's verified client certificate.

The identity comes only from the certificate that the TLS handshake verified
against the federation CA. No request field, header or metadata can change
it. On the admin socket there is no certificate; the caller is the local
operator, who reached a mode-0600 socket.
"""

from __future__ import annotations

import functools

import grpc
from cryptography import x509

from node.errors import CertificateError
from node.identity import certs

__all__ = ["OPERATOR", "caller_certificate", "caller_department", "caller_identity"]

#: The actor recorded for calls that arrive on the local admin socket.
OPERATOR = "operator"


@functools.lru_cache(maxsize=256)
def _parse(pem: bytes) -> x509.Certificate:
    return certs.load_cert_pem(pem, what="peer certificate")


def caller_certificate(context: grpc.ServicerContext) -> x509.Certificate | None:
    """The peer's verified certificate, or None on a connection without TLS."""
    values = context.auth_context().get("x509_pem_cert")
    if not values:
        return None
    return _parse(values[0])


def caller_identity(context: grpc.ServicerContext) -> tuple[str, str]:
    """(federation, department) of the caller.

    Raises:
        CertificateError: the call carries no verified certificate.
    """
    cert = caller_certificate(context)
    if cert is None:
        raise CertificateError("call carries no verified client certificate")
    return certs.identity_of(cert)


def caller_department(context: grpc.ServicerContext) -> str:
    """The calling department, or :data:`OPERATOR` on the local admin socket."""
    if context.auth_context().get("transport_security_type") != [b"ssl"]:
        return OPERATOR
    return caller_identity(context)[1]
