"""Enrolment requests: every malformed or dishonest request is refused with an IdentityError."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import canonical
from node.cli.operator import display_name_arg, endpoint_arg
from node.errors import IdentityError
from node.identity import keys
from node.identity.enrolment import make_request, parse_request


@dataclass(frozen=True)
class Keys:
    tls: ec.EllipticCurvePrivateKey
    signing: ed25519.Ed25519PrivateKey
    hpke_public: bytes


@pytest.fixture(scope="module")
def node_keys() -> Keys:
    return Keys(keys.generate_tls_key(), keys.generate_ed25519(), keys.generate_hpke().public_bytes)


def _good(k: Keys, **overrides: str) -> bytes:
    fields = {
        "federation": "city",
        "department": "traffic",
        "display_name": "Traffic Office",
        "endpoint": "traffic.city.example:7443",
        **overrides,
    }
    return make_request(tls_key=k.tls, signing_key=k.signing, hpke_public=k.hpke_public, **fields)[
        1
    ]


def _resigned(k: Keys, change: Callable[[dict[str, Any]], Any]) -> bytes:
    """The good request with its body changed by ``change`` and signed again."""
    outer = json.loads(_good(k))
    body = change(outer["request"])
    body = outer["request"] if body is None else body
    signature = k.signing.sign(canonical.dumps(body))
    return canonical.dumps({"request": body, "signature": base64.b64encode(signature).decode()})


def _csr(key: Any, names: list[x509.GeneralName]) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "traffic")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.__setitem__(field, value)


_BAD: list[tuple[str, Callable[[Keys], Callable[[dict[str, Any]], Any]], str]] = [
    ("body-is-a-list", lambda k: lambda body: [body], "must have exactly the fields"),
    ("body-is-a-string", lambda k: lambda body: "x", "must have exactly the fields"),
    ("unknown-field", lambda k: _set("role", "admin"), "must have exactly the fields"),
    ("missing-field", lambda k: lambda body: body.pop("endpoint"), "must have exactly the fields"),
    ("version", lambda k: _set("v", 2), "unknown enrolment request version/type 2"),
    ("type", lambda k: _set("type", "fednode.receipt"), "version/type 1/'fednode.receipt'"),
    ("department-id", lambda k: _set("department", "Tax_Office"), "invalid department id"),
    ("federation-id", lambda k: _set("federation", 7), "'federation' must be a string"),
    ("display-escape", lambda k: _set("display_name", "ok\x1b[2J"), "invalid display name"),
    ("display-empty", lambda k: _set("display_name", ""), "invalid display name"),
    ("display-long", lambda k: _set("display_name", "x" * 81), "invalid display name"),
    ("endpoint-no-port", lambda k: _set("endpoint", "traffic.example"), "is not HOST:PORT"),
    ("endpoint-url", lambda k: _set("endpoint", "https://t.example:1/"), "is not HOST:PORT"),
    ("endpoint-port", lambda k: _set("endpoint", "t.example:70000"), "port must be a number"),
    ("endpoint-newline", lambda k: _set("endpoint", "t.example:1\n"), "is not HOST:PORT"),
    ("hpke-base64", lambda k: _set("hpke_public", "***"), "'hpke_public' is not base64"),
    ("hpke-length", lambda k: _set("hpke_public", "AAAA"), "HPKE public key must be 1216 bytes"),
    ("csr-garbage", lambda k: _set("csr", "not a csr"), "malformed CSR"),
    (
        "csr-rsa-key",
        lambda k: _set("csr", _csr(rsa.generate_private_key(65537, 1024), [])),
        "CSR key is .*RSA.*not ECDSA P-256",
    ),
    (
        "csr-p384-key",
        lambda k: _set("csr", _csr(ec.generate_private_key(ec.SECP384R1()), [])),
        "not ECDSA P-256",
    ),
    (
        "csr-names-another-department",
        lambda k: _set(
            "csr",
            _csr(k.tls, [x509.UniformResourceIdentifier("fednode://city/health")]),
        ),
        r"CSR names \['fednode://city/health'\], not only department 'traffic'",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in _BAD], ids=[i for i, _, _ in _BAD]
)
def test_malformed_request_is_refused(
    node_keys: Keys,
    change: Callable[[Keys], Callable[[dict[str, Any]], Any]],
    message: str,
) -> None:
    with pytest.raises(IdentityError, match=message):
        parse_request(_resigned(node_keys, change(node_keys)))


@pytest.mark.parametrize(
    ("outer", "message"),
    [
        ([], "exactly 'request' and 'signature'"),
        ({"request": {}, "signature": "", "extra": 1}, "exactly 'request' and 'signature'"),
        ({"request": {}}, "exactly 'request' and 'signature'"),
    ],
)
def test_malformed_envelope_is_refused(outer: Any, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        parse_request(canonical.dumps(outer))


def test_request_signed_by_another_key_is_refused(node_keys: Keys) -> None:
    outer = json.loads(_good(node_keys))
    other = keys.generate_ed25519().sign(canonical.dumps(outer["request"]))
    outer["signature"] = base64.b64encode(other).decode()
    with pytest.raises(IdentityError, match="bad Ed25519 signature on enrolment request"):
        parse_request(canonical.dumps(outer))


def test_good_request_round_trips(node_keys: Keys) -> None:
    request = parse_request(_good(node_keys, endpoint="[::1]:7443"))
    assert (request.federation, request.department) == ("city", "traffic")
    assert request.display_name == "Traffic Office" and request.endpoint == "[::1]:7443"
    assert request.ed25519_public == keys.ed25519_public_raw(node_keys.signing)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(
        [
            "v",
            "type",
            "federation",
            "department",
            "display_name",
            "endpoint",
            "ed25519_public",
            "hpke_public",
            "csr",
        ]
    ),
    value=_JSON,
)
def test_any_signed_field_value_parses_or_raises_identity_error(
    node_keys: Keys, field: str, value: Any
) -> None:
    data = _resigned(node_keys, _set(field, value))
    with contextlib.suppress(IdentityError):
        parse_request(data)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=64) | _JSON.map(canonical.dumps))
def test_any_bytes_parse_or_raise_identity_error(node_keys: Keys, data: bytes) -> None:
    with contextlib.suppress(IdentityError):
        parse_request(data)


def test_init_options_refuse_what_the_authority_would_refuse() -> None:
    # 'fednode init' must not make a home whose request 'ca issue' then refuses.
    with pytest.raises(argparse.ArgumentTypeError, match="invalid display name"):
        display_name_arg("Traffic\x1b[2J")
    with pytest.raises(argparse.ArgumentTypeError, match="is not HOST:PORT"):
        endpoint_arg("traffic.example")
    assert display_name_arg("Traffic Office") == "Traffic Office"
