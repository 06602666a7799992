"""The federation authority: issuing, identity in certificates, revocation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from node.errors import CertificateError, ConfigError, IdentityError
from node.identity import certs
from node.identity.authority import Authority
from node.identity.home import init_home


def _request(root: Path, department: str, federation: str = "city") -> bytes:
    return init_home(
        root / department,
        federation=federation,
        department=department,
        display_name=department,
        listen="127.0.0.1:0",
        endpoint="127.0.0.1:1",
    )


def test_issued_certificate_names_the_department(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    issued = ca.issue(_request(tmp_path, "traffic"))
    cert = x509.load_pem_x509_certificate(issued.pem)
    assert certs.identity_of(cert) == ("city", "traffic")
    assert certs.fingerprint(cert) == issued.fingerprint
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["traffic.city.fednode"]
    # The CA really signed it.
    cert.verify_directly_issued_by(ca.ca_certificate())


def test_second_ca_in_one_folder_is_refused(tmp_path: Path) -> None:
    Authority.create(tmp_path / "ca", "city")
    with pytest.raises(ConfigError, match="already holds a federation CA"):
        Authority.create(tmp_path / "ca", "city")


def test_request_for_other_federation_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    with pytest.raises(IdentityError, match="for federation 'town'"):
        ca.issue(_request(tmp_path, "traffic", federation="town"))


def test_tampered_request_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    request = json.loads(_request(tmp_path, "traffic"))
    request["request"]["endpoint"] = "evil.example:7443"
    from ledger.canonical import dumps

    with pytest.raises(IdentityError, match="bad Ed25519 signature on enrolment request"):
        ca.issue(dumps(request))


def test_validity_window_is_honoured(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    issued = ca.issue(_request(tmp_path, "traffic"), not_before=start, validity_days=10)
    cert = x509.load_pem_x509_certificate(issued.pem)
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + dt.timedelta(days=10)


def test_revocation_lands_in_next_directory(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    issued = ca.issue(_request(tmp_path, "traffic"))
    ca.issue(_request(tmp_path, "health"))
    ca.revoke("traffic", reason="key-compromise")
    directory = json.loads(ca.publish_directory())["directory"]
    assert [d["id"] for d in directory["departments"]] == ["health"]
    assert directory["revoked"][0]["fingerprint"] == issued.fingerprint
    with pytest.raises(CertificateError, match="holds no certificate"):
        ca.revoke("traffic")


@pytest.mark.parametrize("bad", ["", "a", "Traffic", "tax_office", "-tax", "x" * 40])
def test_invalid_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid department id"):
        certs.check_identifier(bad, "department")
