"""The signed federation directory: parsing, signature, expiry and serial rules."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps
from ledger.errors import CanonicalJSONError
from node.errors import DirectoryError, UnknownPeerError
from node.identity.authority import Authority
from node.identity.directory import DirectoryHolder, parse_directory, sign_directory
from node.identity.home import init_home


def _enrol(ca: Authority, root: Path, dept: str, *, witness: bool) -> None:
    """A fresh home for ``dept`` under ``root``, enrolled (again, if need be) by ``ca``."""
    request = init_home(
        root / dept,
        federation="city",
        department=dept,
        display_name=dept.title(),
        listen="127.0.0.1:0",
        endpoint=f"{dept}.example:7443",
    )
    ca.issue(request, witness=witness, replace=True)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    root = tmp_path_factory.mktemp("authority")
    ca = Authority.create(root / "ca", "city")
    for dept in ("traffic", "health", "security"):
        _enrol(ca, root, dept, witness=dept != "security")
    return ca


def test_published_directory_round_trips(authority: Authority) -> None:
    data = authority.publish_directory(witness_threshold=1)
    directory = parse_directory(data, authority.ca_certificate())
    assert set(directory.entries) == {"traffic", "health", "security"}
    assert directory.get("traffic").endpoint == "traffic.example:7443"
    assert [w.department for w in directory.witnesses] == ["health", "traffic"]
    assert directory.witness_threshold == 1
    assert len(directory.get("health").hpke_public) == 1216


def test_unknown_department_is_refused(authority: Authority) -> None:
    directory = parse_directory(authority.publish_directory(), authority.ca_certificate())
    with pytest.raises(UnknownPeerError, match="'tax' is not in federation directory"):
        directory.get("tax")


def test_impossible_witness_threshold_is_refused(authority: Authority) -> None:
    from node.errors import ConfigError

    with pytest.raises(ConfigError, match="impossible with 2 witnesses"):
        authority.publish_directory(witness_threshold=2)


def test_a_threshold_lowered_for_want_of_witnesses_comes_back_with_them(tmp_path: Path) -> None:
    # A revocation (or an early publish) can leave fewer witnesses than the chosen
    # threshold needs; the directory then carries what is possible, but the
    # choice is kept, so the federation does not stay weakly witnessed for good.
    ca = Authority.create(tmp_path / "ca", "city")

    def enrol(dept: str) -> None:
        _enrol(ca, tmp_path, dept, witness=True)

    def published() -> int:
        return parse_directory(ca.publish_directory(), ca.ca_certificate()).witness_threshold

    enrol("traffic")
    assert published() == 0  # one witness cannot witness its own log
    for dept in ("health", "security"):
        enrol(dept)
    assert published() == 1  # the default choice, not the 0 published before
    assert (
        parse_directory(
            ca.publish_directory(witness_threshold=2), ca.ca_certificate()
        ).witness_threshold
        == 2
    )
    ca.revoke("security", reason="key-compromise")
    assert published() == 1
    assert ca.chosen_witness_threshold == 2
    enrol("security")  # re-enrolled with new keys
    assert published() == 2


def _resign(authority: Authority, mutate: object) -> bytes:
    doc = json.loads(authority.publish_directory())["directory"]
    assert callable(mutate)
    mutate(doc)
    from node.identity import keys

    return sign_directory(doc, keys.load_tls_key(authority.key_path))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(v=2), "unknown directory version"),
        (lambda d: d.update(expires_at=1), "expired"),
        (lambda d: d.update(serial="7"), "'serial' must be int"),
        (lambda d: d["departments"].append(dict(d["departments"][0])), "listed twice"),
        (lambda d: d["departments"][0].update(hpke_public="***"), "not base64"),
        (lambda d: d.update(extra=1), r"unknown fields \['extra'\], missing fields \[\]"),
        (lambda d: d.pop("revoked"), r"unknown fields \[\], missing fields \['revoked'\]"),
        (lambda d: d["departments"][0].update(role="ca"), r"unknown fields \['role'\]"),
        (lambda d: d["departments"][0].pop("witness"), r"missing fields \['witness'\]"),
        (lambda d: d["departments"].append([]), "directory department must be an object"),
        (lambda d: d["departments"][0].update(id="Tax_Office"), "invalid department id"),
        (lambda d: d.update(federation="Town!"), "invalid federation id"),
        (lambda d: d["departments"][0].update(display_name="\x1b]0;x\x07"), "display name"),
        (lambda d: d["departments"][0].update(endpoint="no-port"), "is not HOST:PORT"),
        (lambda d: d["departments"][0].update(tls_fingerprint="sha256:AB"), "sha256:<64 hex"),
        (lambda d: d["departments"][0].update(ed25519_public="AAAA"), "must be 32 bytes, got 3"),
        (lambda d: d["departments"][0].update(hpke_public="AAAA"), "must be 1216 bytes, got 3"),
        (lambda d: d.update(serial=0), "a serial starts at 1"),
        (lambda d: d.update(serial=-5), "a serial starts at 1"),
        (lambda d: d.update(issued_at=d["expires_at"] + 1), "expires after it is issued"),
        (lambda d: d.update(witness_threshold=-1), "threshold -1 is not reachable"),
        (lambda d: d.update(witness_threshold=2), r"threshold 2 is not reachable: expected 0 to 1"),
        (lambda d: d["revoked"].append({}), "directory revocation: unknown fields"),
        (
            lambda d: d["revoked"].append(
                {
                    "serial": "1",
                    "fingerprint": d["departments"][0]["tls_fingerprint"],
                    "department": d["departments"][0]["id"],
                    "revoked_at": 1,
                    "reason": "key-compromise",
                }
            ),
            "pins a revoked certificate for department 'health'",
        ),
    ],
)
def test_malformed_directories_are_refused(
    authority: Authority, mutate: object, match: str
) -> None:
    with pytest.raises(DirectoryError, match=match):
        parse_directory(_resign(authority, mutate), authority.ca_certificate())


def test_directory_signed_by_another_ca_is_refused(authority: Authority, tmp_path: Path) -> None:
    other = Authority.create(tmp_path / "other", "city")
    with pytest.raises(DirectoryError, match="signature does not verify"):
        parse_directory(authority.publish_directory(), other.ca_certificate())


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(authority: Authority, position: int, bit: int) -> None:
    data = bytearray(authority.publish_directory())
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(DirectoryError):
        parse_directory(bytes(data), authority.ca_certificate())


def test_holder_only_moves_forward(authority: Authority, tmp_path: Path) -> None:
    first = authority.publish_directory()
    second = authority.publish_directory()
    path, serial_path = tmp_path / "directory.json", tmp_path / "directory.serial"
    path.write_bytes(first)
    holder = DirectoryHolder(path, serial_path, authority.ca_certificate())
    holder.install(second)
    assert holder.current.serial == json.loads(second)["directory"]["serial"]
    # The same file again is a no-op, as on a stopped node.
    assert holder.install(second).serial == holder.current.serial
    with pytest.raises(DirectoryError, match="not newer"):
        holder.install(first)
    # A restart from a stale copy on disk is refused too: the accepted serial is persisted.
    path.write_bytes(first)
    with pytest.raises(DirectoryError, match="older than serial"):
        DirectoryHolder(path, serial_path, authority.ca_certificate())


def test_signature_field_must_be_base64(authority: Authority) -> None:
    outer = json.loads(authority.publish_directory())
    outer["signature"] = base64.b64encode(b"x").decode() + "!"
    from ledger.canonical import dumps

    with pytest.raises(DirectoryError, match="not base64"):
        parse_directory(dumps(outer), authority.ca_certificate())


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=10)
    | st.sampled_from(["AAAA", "sha256:" + "0" * 64, "x.example:1"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_TOP = [
    "v",
    "type",
    "federation",
    "serial",
    "issued_at",
    "expires_at",
    "witness_threshold",
    "departments",
    "revoked",
]
_ENTRY = [
    "id",
    "display_name",
    "endpoint",
    "tls_fingerprint",
    "ed25519_public",
    "hpke_public",
    "witness",
]


@pytest.fixture(scope="module")
def signed_base(authority: Authority) -> tuple[dict[str, object], object]:
    from node.identity import keys

    doc = json.loads(authority.publish_directory())["directory"]
    return doc, keys.load_tls_key(authority.key_path)


@settings(max_examples=150, deadline=None)
@given(
    where=st.sampled_from(["top", "entry", "revoked"]),
    field=st.sampled_from(_TOP + _ENTRY + ["extra"]),
    value=_JSON,
)
def test_any_signed_field_value_parses_or_raises_directory_error(
    authority: Authority,
    signed_base: tuple[dict[str, Any], Any],
    where: str,
    field: str,
    value: object,
) -> None:
    doc = copy.deepcopy(signed_base[0])
    if where == "top":
        doc[field] = value
    elif where == "entry":
        doc["departments"][0][field] = value
    else:
        doc["revoked"] = [value]
    try:
        data = sign_directory(doc, signed_base[1])
    except CanonicalJSONError:
        return
    with contextlib.suppress(DirectoryError):
        parse_directory(data, authority.ca_certificate())


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=64) | _JSON.map(lambda v: dumps({"directory": v, "signature": "AAAA"}))
)
def test_any_bytes_parse_or_raise_directory_error(authority: Authority, data: bytes) -> None:
    with contextlib.suppress(DirectoryError):
        parse_directory(data, authority.ca_certificate())
