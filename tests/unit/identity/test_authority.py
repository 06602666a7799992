"""The federation authority: issuing, identity in certificates, revocation."""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from node.errors import CertificateError, ConfigError, IdentityError
from node.identity import certs, keys
from node.identity.authority import AlreadyEnrolledError, Authority
from node.identity.enrolment import make_request
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


def _enrolled(ca: Authority, department: str) -> dict[str, object]:
    entry: dict[str, object] = ca.enrolments()["departments"][department]
    return entry


@pytest.mark.parametrize(
    ("same_home", "says"),
    [
        (True, r"carries the enrolled keys \(a rotation, or an endpoint change"),
        (False, r"carries different keys .* re-enrolment .* check with the department"),
    ],
    ids=["same-keys", "other-keys"],
)
def test_a_second_certificate_for_a_department_needs_replace(
    tmp_path: Path, same_home: bool, says: str
) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    first = ca.issue(_request(tmp_path, "traffic"))
    assert first.replaced_serial is None and first.same_keys is None
    before = ca.enrolments()
    again = (
        (tmp_path / "traffic" / "request.json").read_bytes()
        if same_home
        else _request(tmp_path / "elsewhere", "traffic")
    )
    with pytest.raises(AlreadyEnrolledError, match="already holds certificate serial") as refused:
        ca.issue(again)
    assert refused.value.hint is not None
    assert re.search(says, refused.value.hint)
    assert "must install the new certificate when the next directory is published" in (
        refused.value.hint
    )
    assert ca.enrolments() == before  # nothing was recorded
    second = ca.issue(again, replace=True)
    assert second.replaced_serial == first.serial
    assert second.same_keys is same_home
    assert _enrolled(ca, "traffic")["tls_fingerprint"] == second.fingerprint


def test_replace_for_a_new_department_is_a_first_enrolment(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    issued = ca.issue(_request(tmp_path, "traffic"), replace=True)
    assert issued.replaced_serial is None
    assert _enrolled(ca, "traffic")["cert_serial"] == issued.serial


def test_a_missing_ca_certificate_is_not_blamed_on_ca_issue(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    ca.cert_path.unlink()
    with pytest.raises(ConfigError, match="cannot read certificate") as missing:
        ca.ca_certificate()
    assert missing.value.hint is not None
    assert "fednode ca init" in missing.value.hint and "ca issue" not in missing.value.hint


def test_node_certificate_fields(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    cert = x509.load_pem_x509_certificate(ca.issue(_request(tmp_path, "traffic")).pem)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.serial_number.bit_length() > 64
    ca_cert = ca.ca_certificate()
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc


def test_request_carrying_another_departments_hpke_key_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    ca.issue(_request(tmp_path, "traffic"))
    theirs = keys.load_hpke(tmp_path / "traffic" / "keys" / "hpke.key").public_bytes
    _, request = make_request(
        federation="city",
        department="health",
        display_name="health",
        endpoint="127.0.0.1:1",
        tls_key=keys.generate_tls_key(),
        signing_key=keys.generate_ed25519(),
        hpke_public=theirs,
    )
    with pytest.raises(IdentityError, match="carries the HPKE key enrolled for 'traffic'"):
        ca.issue(request)
    assert "health" not in ca.enrolments()["departments"]


def test_request_carrying_another_departments_signing_key_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    ca.issue(_request(tmp_path, "traffic"))
    _, request = make_request(
        federation="city",
        department="health",
        display_name="health",
        endpoint="127.0.0.1:1",
        tls_key=keys.generate_tls_key(),
        signing_key=keys.load_ed25519(tmp_path / "traffic" / "keys" / "signing.key"),
        hpke_public=keys.generate_hpke().public_bytes,
    )
    with pytest.raises(IdentityError, match="carries the signing key enrolled for 'traffic'"):
        ca.issue(request)


def test_certificate_outliving_the_ca_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city", validity_days=30)
    with pytest.raises(CertificateError, match="after the federation CA expires") as refused:
        ca.issue(_request(tmp_path, "traffic"), validity_days=365)
    assert "fewer --days" in (refused.value.hint or "")
    assert ca.enrolments()["departments"] == {}
    ca.issue(_request(tmp_path, "traffic"), validity_days=29)


def test_certificate_ending_before_it_starts_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    start = dt.datetime.now(dt.UTC)
    with pytest.raises(CertificateError, match=r"ends .* before it starts"):
        ca.issue(_request(tmp_path, "traffic"), not_before=start, not_after=start)


def test_directory_outliving_or_signed_after_the_ca_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city", validity_days=10)
    ca.issue(_request(tmp_path, "traffic"), validity_days=5)
    with pytest.raises(CertificateError, match="directory would be valid until"):
        ca.publish_directory(validity_days=30)
    expired = int(ca.ca_certificate().not_valid_after_utc.timestamp()) + 1
    with pytest.raises(CertificateError, match="federation CA certificate is valid from") as late:
        ca.publish_directory(validity_days=1, now=expired)
    assert "new CA" in (late.value.hint or "")
    with pytest.raises(ConfigError, match="at least 1 day"):
        ca.publish_directory(validity_days=0)
    # Nothing refused used up a serial.
    assert json.loads(ca.publish_directory(validity_days=5))["directory"]["serial"] == 1


def test_ca_folder_is_private_and_its_state_is_never_overwritten(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    ca.issue(_request(tmp_path, "traffic"))
    ca.key_path.unlink()  # a lost key must not make 'ca init' wipe the enrolments
    with pytest.raises(ConfigError, match="already holds a federation CA"):
        Authority.create(tmp_path / "ca", "city")
    assert "traffic" in Authority(tmp_path / "ca").enrolments()["departments"]


def test_world_readable_ca_key_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    ca.key_path.chmod(0o644)
    with pytest.raises(IdentityError, match="open to other users"):
        ca.issue(_request(tmp_path, "traffic"))


@pytest.mark.parametrize("reason", ["", "x" * 81, "oops\x1b[2J"], ids=["empty", "long", "escape"])
def test_revocation_reason_must_be_printable(tmp_path: Path, reason: str) -> None:
    ca = Authority.create(tmp_path / "ca", "city")
    ca.issue(_request(tmp_path, "traffic"))
    with pytest.raises(ConfigError, match="invalid revocation reason"):
        ca.revoke("traffic", reason=reason)
    assert "traffic" in ca.enrolments()["departments"]
