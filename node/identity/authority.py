"""The federation authority: the CA, enrolment records, revocations and directory.

The authority's folder is meant to live offline (an air-gapped machine or an
HSM-backed host). It holds::

    ca.key          ECDSA P-256 CA key (0600); signs certificates and directories
    ca.pem          the CA certificate every node trusts
    state.json      enrolled departments, revocations and the last directory serial

Invariants: certificate serials are random 159-bit numbers (RFC 5280), the
directory serial only ever increases, nothing is signed while the CA
certificate is not valid nor valid beyond it, no two departments publish the
same signing or HPKE key, and ``state.json`` is replaced
atomically so a crash never loses an enrolment or a revocation. A department
that already holds a certificate is re-issued one only when the caller asks
for a replacement: peers pin the certificate in the directory, so a silent
re-issue would lock the department out once the next directory is installed.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ledger import canonical
from ledger.errors import CanonicalJSONError
from node.errors import CertificateError, ConfigError, IdentityError
from node.identity import certs, keys
from node.identity.directory import sign_directory
from node.identity.enrolment import parse_request

__all__ = ["AlreadyEnrolledError", "Authority", "IssuedCertificate"]


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures only; the CA also signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


class AlreadyEnrolledError(CertificateError):
    """The department already holds a certificate and no replacement was asked for."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate just issued.

    ``replaced_serial`` is the serial of the department's previous certificate
    when this one replaces it, and ``same_keys`` whether the request carried
    the keys already enrolled (a rotation or endpoint change) rather than new
    ones (a re-enrolment); both are None for a first enrolment.
    """

    department: str
    serial: str
    fingerprint: str
    not_after: dt.datetime
    pem: bytes
    replaced_serial: str | None = None
    same_keys: bool | None = None


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def _same_keys(enrolled: dict[str, Any], ed25519_public: bytes, hpke_public: bytes) -> bool:
    """Whether a request carries the signing and HPKE keys already enrolled.

    ``fednode request`` (an endpoint or name change, a rotation) reuses them;
    ``fednode init`` in another home makes new ones.
    """
    return bool(
        enrolled["ed25519_public"] == base64.b64encode(ed25519_public).decode()
        and enrolled["hpke_public"] == base64.b64encode(hpke_public).decode()
    )


def _replacement_hint(department: str, *, same_keys: bool) -> str:
    consequence = (
        f"replacing it means {department} must install the new certificate when the next "
        "directory is published, or peers refuse it"
    )
    if same_keys:
        return (
            "the request carries the enrolled keys (a rotation, or an endpoint change from "
            f"'fednode request'); pass --replace if that is intended: {consequence}"
        )
    return (
        "the request carries different keys from the enrolled ones, so this is a "
        f"re-enrolment (a new home, or another node claiming '{department}'): check with "
        f"the department before passing --replace: {consequence}"
    )


def _refuse_keys_of_another_department(
    state: dict[str, Any], department: str, ed25519_public: bytes, hpke_public: bytes
) -> None:
    """A request may not publish a signing or HPKE key another department holds.

    The Ed25519 signature proves possession of the signing key, but nothing
    proves possession of the HPKE key: without this check a department could
    list another's HPKE key as its own, so that shares meant for it are
    readable by the other department.
    """
    mine = {
        "ed25519_public": base64.b64encode(ed25519_public).decode(),
        "hpke_public": base64.b64encode(hpke_public).decode(),
    }
    for other, enrolled in state["departments"].items():
        if other == department:
            continue
        for field, value in mine.items():
            if enrolled[field] == value:
                kind = "signing" if field == "ed25519_public" else "HPKE"
                raise IdentityError(
                    f"request for {department!r} carries the {kind} key enrolled for {other!r}",
                    hint="each department makes its own keys with 'fednode init'; "
                    "check where this request came from",
                )


def _check_ca_current(ca_cert: x509.Certificate, now: dt.datetime) -> None:
    if not ca_cert.not_valid_before_utc <= now < ca_cert.not_valid_after_utc:
        raise CertificateError(
            f"the federation CA certificate is valid from {ca_cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {ca_cert.not_valid_after_utc:%Y-%m-%d}, not at {now:%Y-%m-%d %H:%M} UTC",
            hint="a federation whose CA expired needs a new CA ('fednode ca init') and every "
            "department enrolled with it again; check the clock first",
        )


def _check_within_ca(
    ca_cert: x509.Certificate, start: dt.datetime, end: dt.datetime, what: str
) -> None:
    """Nothing the CA signs may outlive it: peers would refuse it on the CA's last day."""
    if end <= start:
        raise CertificateError(f"{what} validity ends ({end:%Y-%m-%d}) before it starts")
    if end > ca_cert.not_valid_after_utc:
        raise CertificateError(
            f"{what} would be valid until {end:%Y-%m-%d}, after the federation CA expires "
            f"({ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)",
            hint="choose fewer --days",
        )


class Authority:
    """A federation authority folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key_path = folder / "ca.key"
        self.cert_path = folder / "ca.pem"
        self.state_path = folder / "state.json"

    # --- creation -------------------------------------------------------------

    @classmethod
    def create(cls, folder: Path, federation: str, *, validity_days: int = 3650) -> Authority:
        """Create a new CA in an empty folder.

        Raises:
            ConfigError: the folder already holds a CA, or the federation id is invalid.
        """
        certs.check_identifier(federation, "federation")
        authority = cls(folder)
        if authority.key_path.exists() or authority.state_path.exists():
            raise ConfigError(
                f"{folder} already holds a federation CA",
                hint="use another --ca folder, or keep using this one",
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"fednode {federation} federation authority"
                ),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(signs_certificates=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys.save_tls_key(authority.key_path, key)
        keys.write_private_file(authority.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        authority.cert_path.chmod(0o644)
        authority._save_state(
            {
                "v": 1,
                "federation": federation,
                "directory_serial": 0,
                "witness_threshold": 1,
                "departments": {},
                "revoked": [],
            }
        )
        return authority

    # --- state ------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            state = canonical.loads(self.state_path.read_bytes())
        except FileNotFoundError as e:
            raise ConfigError(
                f"no federation CA in {self.folder}",
                hint="create one with 'fednode ca init --federation NAME --ca FOLDER'",
            ) from e
        except (OSError, CanonicalJSONError) as e:
            raise ConfigError(f"cannot read {self.state_path}: {e}") from e
        if not isinstance(state, dict) or state.get("v") != 1:
            raise ConfigError(f"{self.state_path} has an unknown format version")
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        keys.write_private_file(self.state_path, canonical.dumps(state))

    @property
    def federation(self) -> str:
        return str(self._load_state()["federation"])

    def ca_certificate(self) -> x509.Certificate:
        """The federation CA certificate.

        Raises:
            ConfigError: the folder holds no readable ca.pem.
            CertificateError: ca.pem is not a PEM certificate.
        """
        return certs.load_ca_cert(
            self.cert_path,
            hint=f"is --ca {self.folder} the folder 'fednode ca init' created?",
        )

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        return keys.load_tls_key(self.key_path)

    # --- certificates -------------------------------------------------------------

    def issue(
        self,
        request_bytes: bytes,
        *,
        witness: bool = True,
        validity_days: int = 365,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        replace: bool = False,
    ) -> IssuedCertificate:
        """Issue a node certificate for an enrolment request and record the enrolment.

        For a department that already holds a certificate, ``replace`` must be
        true: the new certificate then takes the old one's place in the next
        directory, and peers refuse the old one once they install it. The old
        certificate is not revoked.

        Raises:
            AlreadyEnrolledError: the department holds a certificate and
                ``replace`` is false; the hint says whether the request carries
                the enrolled keys.
            IdentityError: the request is malformed or badly signed, is for
                another federation, or carries a key enrolled for another department.
            CertificateError: the CA certificate is not valid now, or the
                certificate would end before it starts or after the CA expires.
        """
        request = parse_request(request_bytes)
        state = self._load_state()
        if request.federation != state["federation"]:
            raise IdentityError(
                f"request is for federation {request.federation!r}, "
                f"this CA serves {state['federation']!r}",
                hint="run 'fednode init' again with the right --federation",
            )
        enrolled = state["departments"].get(request.department)
        same_keys: bool | None = None
        if enrolled is not None:
            same_keys = _same_keys(enrolled, request.ed25519_public, request.hpke_public)
            if not replace:
                raise AlreadyEnrolledError(
                    f"department {request.department!r} already holds certificate serial "
                    f"{enrolled['cert_serial']}",
                    hint=_replacement_hint(request.department, same_keys=same_keys),
                )
        _refuse_keys_of_another_department(
            state, request.department, request.ed25519_public, request.hpke_public
        )
        ca_cert = self.ca_certificate()
        now = dt.datetime.now(dt.UTC)
        _check_ca_current(ca_cert, now)
        start = _utc(not_before) if not_before else now - dt.timedelta(minutes=5)
        end = _utc(not_after) if not_after else start + dt.timedelta(days=validity_days)
        _check_within_ca(ca_cert, start, end, "certificate")
        ca_key = self._ca_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, request.department),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, request.federation),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(request.csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(
                            certs.department_uri(request.federation, request.department)
                        ),
                        x509.DNSName(certs.dns_name(request.federation, request.department)),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(signs_certificates=False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(request.csr.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        fingerprint = certs.fingerprint(cert)
        serial = format(cert.serial_number, "x")
        state["departments"][request.department] = {
            "id": request.department,
            "display_name": request.display_name,
            "endpoint": request.endpoint,
            "tls_fingerprint": fingerprint,
            "cert_serial": serial,
            "ed25519_public": base64.b64encode(request.ed25519_public).decode(),
            "hpke_public": base64.b64encode(request.hpke_public).decode(),
            "witness": witness,
        }
        self._save_state(state)
        return IssuedCertificate(
            department=request.department,
            serial=serial,
            fingerprint=fingerprint,
            not_after=cert.not_valid_after_utc,
            pem=cert.public_bytes(serialization.Encoding.PEM),
            replaced_serial=None if enrolled is None else str(enrolled["cert_serial"]),
            same_keys=same_keys,
        )

    def revoke(self, department: str, *, reason: str = "unspecified") -> dict[str, Any]:
        """Revoke a department's current certificate and remove it from the directory.

        The department disappears from the next published directory until it is
        issued a new certificate.

        Raises:
            CertificateError: the department has no current certificate.
            ConfigError: the reason is empty, too long, or holds control characters
                (every node prints it).
        """
        if not 0 < len(reason) <= certs.MAX_DISPLAY_NAME or not reason.isprintable():
            raise ConfigError(
                f"invalid revocation reason {reason[: certs.MAX_DISPLAY_NAME]!r}",
                hint=f"use 1-{certs.MAX_DISPLAY_NAME} printable characters, e.g. key-compromise",
            )
        state = self._load_state()
        entry = state["departments"].pop(department, None)
        if entry is None:
            raise CertificateError(
                f"department {department!r} holds no certificate from this CA",
                hint="list enrolments with 'fednode ca list'",
            )
        revocation = {
            "serial": entry["cert_serial"],
            "fingerprint": entry["tls_fingerprint"],
            "department": department,
            "revoked_at": int(time.time()),
            "reason": reason,
        }
        state["revoked"].append(revocation)
        self._save_state(state)
        return revocation

    def enrolments(self) -> dict[str, Any]:
        return dict(self._load_state())

    @property
    def chosen_witness_threshold(self) -> int:
        """The threshold last given to :meth:`publish_directory` (1 until one is given);
        a directory carries less only while fewer witnesses than that can cosign."""
        return int(self._load_state()["witness_threshold"])

    # --- directory --------------------------------------------------------------

    def publish_directory(
        self,
        *,
        validity_days: int = 30,
        witness_threshold: int | None = None,
        now: int | None = None,
    ) -> bytes:
        """Sign a new directory with the next serial and return its bytes.

        Raises:
            ConfigError: the witness threshold exceeds the number of witnesses, or
                the validity is not positive.
            CertificateError: the CA certificate is not valid now, or expires
                before the directory would.
        """
        if validity_days < 1:
            raise ConfigError(f"directory validity must be at least 1 day, got {validity_days}")
        state = self._load_state()
        issued = int(time.time()) if now is None else now
        ca_cert = self.ca_certificate()
        issued_dt = dt.datetime.fromtimestamp(issued, dt.UTC)
        _check_ca_current(ca_cert, issued_dt)
        _check_within_ca(
            ca_cert, issued_dt, issued_dt + dt.timedelta(days=validity_days), "directory"
        )
        departments = [
            {k: v for k, v in entry.items() if k != "cert_serial"}
            for _, entry in sorted(state["departments"].items())
        ]
        witnesses = sum(1 for d in departments if d["witness"])
        # A log cannot witness itself, so at most n - 1 witnesses can cosign any one log.
        ceiling = max(witnesses - 1, 0)
        if witness_threshold is None:
            # The threshold the authority chose stays its choice: a directory
            # published while too few witnesses are enrolled (the first ones,
            # or after a revocation) carries what is possible, and the next
            # one with enough witnesses carries the choice again.
            threshold = min(int(state["witness_threshold"]), ceiling)
        elif not 0 <= witness_threshold <= ceiling:
            raise ConfigError(
                f"witness threshold {witness_threshold} is impossible with {witnesses} witnesses",
                hint=f"choose a value from 0 to {ceiling} (a log cannot witness itself)",
            )
        else:
            threshold = witness_threshold
            state["witness_threshold"] = threshold
        state["directory_serial"] += 1
        document = {
            "v": 1,
            "type": "fednode.directory",
            "federation": state["federation"],
            "serial": state["directory_serial"],
            "issued_at": issued,
            "expires_at": issued + validity_days * 86400,
            "witness_threshold": threshold,
            "departments": departments,
            "revoked": state["revoked"],
        }
        data = sign_directory(document, self._ca_key())
        self._save_state(state)
        return data
