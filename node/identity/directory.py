"""The federation directory: the authority-signed list of departments.

The directory is the federation's single source of truth about who takes
part: each department's endpoint, TLS certificate fingerprint, Ed25519 and
HPKE public keys and witness role, plus the revoked certificates, a serial
and an expiry. Its format is fixed in ``docs/architecture.md``::

    {"directory": D, "signature": base64(ECDSA-P256-SHA256 over canonical(D))}

Invariants:

* a node never accepts a directory whose signature does not verify against
  the federation CA, or that has expired;
* a node never goes back to a lower serial than the highest it has accepted
  (the serial is persisted beside the directory), so a stale copy cannot
  resurrect a revoked certificate;
* a parsed directory holds exactly the fields of format v1, each well formed
  (ids, display names, endpoints, fingerprints, key lengths, a serial from 1,
  a witness threshold a log can reach), no pinned certificate is also listed
  as revoked, and any other input raises :class:`DirectoryError`.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ledger import canonical
from ledger.errors import CanonicalJSONError
from node.errors import ConfigError, DirectoryError, StaleDirectoryError, UnknownPeerError
from node.identity import certs
from node.identity.keys import HPKE_PUBLIC_LEN, write_private_file
from node.timefmt import utc_text

__all__ = [
    "DepartmentEntry",
    "Directory",
    "DirectoryHolder",
    "Revocation",
    "parse_directory",
    "sign_directory",
]

FORMAT_VERSION = 1

_DOCUMENT_FIELDS = frozenset(
    {
        "v",
        "type",
        "federation",
        "serial",
        "issued_at",
        "expires_at",
        "witness_threshold",
        "departments",
        "revoked",
    }
)
_ENTRY_FIELDS = frozenset(
    {
        "id",
        "display_name",
        "endpoint",
        "tls_fingerprint",
        "ed25519_public",
        "hpke_public",
        "witness",
    }
)
_REVOCATION_FIELDS = frozenset({"serial", "fingerprint", "department", "revoked_at", "reason"})
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class DepartmentEntry:
    department: str
    display_name: str
    endpoint: str
    tls_fingerprint: str
    ed25519_public: bytes
    hpke_public: bytes
    witness: bool


@dataclass(frozen=True)
class Revocation:
    serial: str
    fingerprint: str
    department: str
    revoked_at: int
    reason: str


@dataclass(frozen=True)
class Directory:
    federation: str
    serial: int
    issued_at: int
    expires_at: int
    witness_threshold: int
    entries: dict[str, DepartmentEntry]
    revoked: tuple[Revocation, ...]
    raw: bytes

    def get(self, department: str) -> DepartmentEntry:
        """The entry for ``department``.

        Raises:
            UnknownPeerError: the department is not in this directory.
        """
        entry = self.entries.get(department)
        if entry is None:
            raise UnknownPeerError(
                f"department '{department}' is not in federation directory serial {self.serial}",
                hint="ask the federation authority to enrol it and publish a new directory",
            )
        return entry

    def revocation_for(self, fingerprint: str) -> Revocation | None:
        for rev in self.revoked:
            if rev.fingerprint == fingerprint:
                return rev
        return None

    @property
    def witnesses(self) -> list[DepartmentEntry]:
        return [e for e in self.entries.values() if e.witness]


def sign_directory(document: dict[str, Any], ca_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign a directory document and return the canonical file bytes."""
    body = canonical.dumps(document)
    signature = ca_key.sign(body, ec.ECDSA(hashes.SHA256()))
    return canonical.dumps(
        {"directory": document, "signature": base64.b64encode(signature).decode()}
    )


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise DirectoryError(f"directory field {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise DirectoryError(f"directory field {what} is not base64") from e


def _field(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DirectoryError(f"{where}: field '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _fields(obj: object, expected: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DirectoryError(f"{where} must be an object")
    if set(obj) != expected:
        unknown = sorted(set(obj) - expected)
        missing = sorted(expected - set(obj))
        raise DirectoryError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    return obj


def _syntax(check: Any, value: str, *args: str) -> str:
    """Run a :mod:`certs` syntax check, reporting a failure as a DirectoryError."""
    try:
        result: str = check(value, *args)
    except ConfigError as e:
        raise DirectoryError(f"directory: {e}") from e
    return result


def _fingerprint(doc: dict[str, Any], key: str, where: str) -> str:
    value: str = _field(doc, key, str, where)
    if not _FINGERPRINT.match(value):
        raise DirectoryError(f"{where}: field '{key}' must be sha256:<64 hex digits>")
    return value


def _key(value: object, what: str, length: int) -> bytes:
    raw = _b64(value, what)
    if len(raw) != length:
        raise DirectoryError(f"directory field {what} must be {length} bytes, got {len(raw)}")
    return raw


def _entry(raw: object) -> DepartmentEntry:
    w = "directory department"
    raw = _fields(raw, _ENTRY_FIELDS, w)
    department = _syntax(certs.check_identifier, _field(raw, "id", str, w), "department")
    w = f"directory department {department!r}"
    return DepartmentEntry(
        department=department,
        display_name=_syntax(certs.check_display_name, _field(raw, "display_name", str, w)),
        endpoint=_syntax(certs.check_endpoint, _field(raw, "endpoint", str, w)),
        tls_fingerprint=_fingerprint(raw, "tls_fingerprint", w),
        ed25519_public=_key(raw["ed25519_public"], f"{w}.ed25519_public", 32),
        hpke_public=_key(raw["hpke_public"], f"{w}.hpke_public", HPKE_PUBLIC_LEN),
        witness=_field(raw, "witness", bool, w),
    )


def _revocation(raw: object) -> Revocation:
    w = "directory revocation"
    raw = _fields(raw, _REVOCATION_FIELDS, w)
    return Revocation(
        serial=_field(raw, "serial", str, w),
        fingerprint=_fingerprint(raw, "fingerprint", w),
        department=_syntax(certs.check_identifier, _field(raw, "department", str, w), "department"),
        revoked_at=_field(raw, "revoked_at", int, w),
        reason=_field(raw, "reason", str, w),
    )


def parse_directory(
    data: bytes, ca_cert: x509.Certificate, *, now: float | None = None
) -> Directory:
    """Verify and parse signed directory bytes.

    Raises:
        DirectoryError: the bytes are malformed, the signature does not verify
            against ``ca_cert``, the version is unknown, or the directory expired.
    """
    try:
        outer = canonical.loads(data)
    except CanonicalJSONError as e:
        raise DirectoryError(f"directory is not canonical JSON: {e}") from e
    if not isinstance(outer, dict) or set(outer) != {"directory", "signature"}:
        raise DirectoryError("directory file must hold exactly 'directory' and 'signature'")
    doc = outer["directory"]
    if not isinstance(doc, dict):
        raise DirectoryError("'directory' must be an object")
    signature = _b64(outer["signature"], "signature")
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise DirectoryError("federation CA key is not an ECDSA key")
    try:
        public.verify(signature, canonical.dumps(doc), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise DirectoryError(
            "federation directory signature does not verify against the federation CA",
            hint="obtain the directory again from the federation authority",
        ) from e
    if doc.get("v") != FORMAT_VERSION or doc.get("type") != "fednode.directory":
        raise DirectoryError(
            f"unknown directory version {doc.get('v')!r} (this node reads v{FORMAT_VERSION})",
            hint="upgrade fednode",
        )
    where = "directory"
    doc = _fields(doc, _DOCUMENT_FIELDS, where)
    expires_at = _field(doc, "expires_at", int, where)
    current = time.time() if now is None else now
    if expires_at <= current:
        raise DirectoryError(
            f"federation directory serial {doc.get('serial')} expired at {utc_text(expires_at)}",
            hint="ask the federation authority to publish a fresh directory",
        )
    federation = _syntax(
        certs.check_identifier, _field(doc, "federation", str, where), "federation"
    )
    serial = _field(doc, "serial", int, where)
    issued_at = _field(doc, "issued_at", int, where)
    if serial < 1 or not 0 <= issued_at <= expires_at:
        raise DirectoryError(
            f"directory serial {serial} issued at {issued_at} expiring at {expires_at}: "
            "a serial starts at 1 and a directory expires after it is issued"
        )
    entries: dict[str, DepartmentEntry] = {}
    for raw in _field(doc, "departments", list, where):
        entry = _entry(raw)
        if entry.department in entries:
            raise DirectoryError(f"department {entry.department!r} is listed twice")
        entries[entry.department] = entry
    revoked = tuple(_revocation(raw) for raw in _field(doc, "revoked", list, where))
    revoked_fingerprints = {rev.fingerprint for rev in revoked}
    for entry in entries.values():
        if entry.tls_fingerprint in revoked_fingerprints:
            raise DirectoryError(
                f"directory pins a revoked certificate for department {entry.department!r}"
            )
    threshold = _field(doc, "witness_threshold", int, where)
    # A log cannot witness itself, so at most n - 1 of n witnesses can cosign one.
    ceiling = max(sum(1 for e in entries.values() if e.witness) - 1, 0)
    if not 0 <= threshold <= ceiling:
        raise DirectoryError(
            f"directory witness threshold {threshold} is not reachable: "
            f"expected 0 to {ceiling} with the witnesses it lists"
        )
    return Directory(
        federation=federation,
        serial=serial,
        issued_at=issued_at,
        expires_at=expires_at,
        witness_threshold=threshold,
        entries=entries,
        revoked=revoked,
        raw=data,
    )


class DirectoryHolder:
    """The node's current directory, swapped atomically when a newer one is installed."""

    def __init__(self, path: Path, serial_path: Path, ca_cert: x509.Certificate) -> None:
        self._path = path
        self._serial_path = serial_path
        self._ca_cert = ca_cert
        self._lock = threading.Lock()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DirectoryError(
                f"cannot read federation directory {path}: {e.strerror}",
                hint="install one with 'fednode directory install FILE'",
            ) from e
        directory = parse_directory(data, ca_cert)
        highest = self._highest_serial()
        if directory.serial < highest:
            raise DirectoryError(
                f"directory serial {directory.serial} is older than serial {highest} "
                "this node already accepted",
                hint="install the current directory with 'fednode directory install FILE'",
            )
        self._current = directory

    def _highest_serial(self) -> int:
        try:
            return int(self._serial_path.read_text().strip())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            raise DirectoryError(f"cannot read {self._serial_path}: {e}") from e

    @property
    def current(self) -> Directory:
        return self._current

    def install(self, data: bytes) -> Directory:
        """Verify ``data`` and make it current if its serial is newer.

        Installing the bytes already installed is a no-op, as on a stopped node,
        so provisioning scripts can be re-run against a running one.

        Raises:
            DirectoryError: bad signature, expired, wrong federation, or a serial
                that is not newer than the current one (other than the same file).
        """
        directory = parse_directory(data, self._ca_cert)
        with self._lock:
            current = self._current
            if directory.federation != current.federation:
                raise DirectoryError(
                    f"directory is for federation {directory.federation!r}, "
                    f"this node is in {current.federation!r}"
                )
            if directory.serial == current.serial and self._installed_bytes() == data:
                return current
            if directory.serial <= current.serial:
                raise StaleDirectoryError(
                    f"directory serial {directory.serial} is not newer than the installed "
                    f"serial {current.serial}",
                    hint="ask the federation authority for the latest directory",
                )
            write_private_file(self._path, data)
            write_private_file(self._serial_path, f"{directory.serial}\n".encode())
            self._current = directory
        return directory

    def _installed_bytes(self) -> bytes | None:
        try:
            return self._path.read_bytes()
        except OSError:
            return None


def install_directory_file(
    home_directory: Path, serial_path: Path, data: bytes, ca_cert: x509.Certificate
) -> Directory:
    """Install a directory into the home of a node that is not running.

    Installing the bytes already installed is a no-op, so provisioning
    scripts can be re-run.

    Raises:
        DirectoryError: bad signature, expired, or older than a serial this
            node already accepted.
    """
    directory = parse_directory(data, ca_cert)
    try:
        highest = int(serial_path.read_text().strip())
    except FileNotFoundError:
        highest = 0
    except (OSError, ValueError) as e:
        raise DirectoryError(f"cannot read {serial_path}: {e}") from e
    if directory.serial < highest or (
        directory.serial == highest
        and home_directory.exists()
        and home_directory.read_bytes() != data
    ):
        raise StaleDirectoryError(
            f"directory serial {directory.serial} is not newer than serial {highest} "
            "this node already accepted",
            hint="ask the federation authority for the latest directory",
        )
    write_private_file(home_directory, data)
    write_private_file(serial_path, f"{directory.serial}\n".encode())
    return directory
