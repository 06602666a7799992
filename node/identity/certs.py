"""X.509 helpers: names, fingerprints and the department identity in a certificate.

A node certificate names its department twice: a URI SAN
``fednode://<federation>/<department>`` that is the identity every check
reads, and a DNS SAN ``<department>.<federation>.fednode`` that exists only so
a gRPC client can pin the expected department with TLS hostname verification.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from node.config import DEFAULT_PORT
from node.errors import CertificateError, ConfigError

__all__ = [
    "CA_CERT_HINT",
    "IDENTIFIER",
    "check_display_name",
    "check_endpoint",
    "check_identifier",
    "department_uri",
    "dns_name",
    "fingerprint",
    "identity_of",
    "load_ca_cert",
    "load_cert",
    "load_cert_pem",
]

IDENTIFIER = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a valid federation or department id.

    Raises:
        ConfigError: the id is not 2-32 characters of a-z, 0-9 and '-'.
    """
    if not IDENTIFIER.match(value):
        raise ConfigError(
            f"invalid {what} id {value!r}",
            hint="use 2-32 lowercase letters, digits and '-', starting with a letter",
        )
    return value


#: Longest display name a department may publish.
MAX_DISPLAY_NAME = 80


def check_display_name(value: str) -> str:
    """Return ``value`` if it can be shown to peers and operators as it is.

    Display names are printed on terminals of other departments and the
    authority, so control characters (escape sequences) are refused.

    Raises:
        ConfigError: empty, longer than :data:`MAX_DISPLAY_NAME`, or not printable.
    """
    if not 0 < len(value) <= MAX_DISPLAY_NAME or not value.isprintable() or value != value.strip():
        raise ConfigError(
            f"invalid display name {value[:MAX_DISPLAY_NAME]!r}",
            hint=f"use 1-{MAX_DISPLAY_NAME} printable characters without control characters "
            "or surrounding spaces",
        )
    return value


def check_endpoint(text: str, *, example: str = f"traffic.city.example:{DEFAULT_PORT}") -> str:
    """Return ``text`` if it is ``HOST:PORT`` or ``[IPV6]:PORT``.

    Raises:
        ConfigError: it is not, naming ``example`` as a good value.
    """
    not_host_port = f"{text!r} is not HOST:PORT (for example {example})"
    if not text.isascii() or not text.isprintable():
        raise ConfigError(not_host_port)
    if text.startswith("["):
        address, closed, rest = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ConfigError(f"{text!r}: {address!r} in brackets is not an IPv6 address") from None
        if not closed or not rest.startswith(":"):
            raise ConfigError(not_host_port)
        port = rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host or any(c.isspace() for c in host) or "/" in text:
            raise ConfigError(not_host_port)
        if ":" in host:
            # Without brackets, an IPv6 address's last group would be read as the port.
            raise ConfigError(f"{text!r}: put an IPv6 address in brackets, for example [::1]:7443")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r}: the port must be a number from 1 to 65535")
    return text


def department_uri(federation: str, department: str) -> str:
    return f"fednode://{federation}/{department}"


def dns_name(federation: str, department: str) -> str:
    return f"{department}.{federation}.fednode"


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER encoding."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_cert_pem(data: bytes, *, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise CertificateError(f"{what} is not a PEM X.509 certificate") from e


_NODE_CERT_HINT = "the federation authority issues a node's certificate with 'fednode ca issue'"
CA_CERT_HINT = (
    "ca.pem is the federation authority's certificate: 'fednode ca init' creates it "
    "and the authority hands a copy to each department"
)


def load_cert(path: Path, *, hint: str = _NODE_CERT_HINT) -> x509.Certificate:
    """Load a node's PEM certificate from ``path``.

    ``hint`` says where the file comes from, for the error when it cannot be
    read; the default is right for a node's own certificate.

    Raises:
        ConfigError: the file cannot be read.
        CertificateError: the file is not a PEM X.509 certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read certificate {path}: {e.strerror}", hint=hint) from e
    return load_cert_pem(data, what=str(path))


def load_ca_cert(path: Path, *, hint: str = CA_CERT_HINT) -> x509.Certificate:
    """Load the federation CA certificate (``ca.pem``) from ``path``.

    It is made once by ``fednode ca init``, never by ``fednode ca issue``; the
    default ``hint`` says so.

    Raises:
        ConfigError: the file cannot be read.
        CertificateError: the file is not a PEM X.509 certificate, or not a CA's
            (a node's own certificate given by mistake, say).
    """
    cert = load_cert(path, hint=hint)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError(
            f"{path} is not a CA certificate (it may be a node's certificate)",
            hint="give the federation authority's ca.pem, made by 'fednode ca init'",
        )
    return cert


def identity_of(cert: x509.Certificate) -> tuple[str, str]:
    """The (federation, department) named by the certificate's ``fednode://`` URI SAN.

    Raises:
        CertificateError: there is no SAN, or not exactly one fednode URI.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise CertificateError("certificate has no subjectAltName") from e
    uris = list(san.get_values_for_type(x509.UniformResourceIdentifier))
    ours = [u for u in uris if u.startswith("fednode://")]
    if len(ours) != 1:
        raise CertificateError(f"certificate must carry one fednode:// URI SAN, found {len(ours)}")
    rest = ours[0].removeprefix("fednode://")
    parts = rest.split("/")
    if len(parts) != 2 or not all(IDENTIFIER.match(p) for p in parts):
        raise CertificateError(f"malformed fednode URI SAN {ours[0]!r}")
    return parts[0], parts[1]
