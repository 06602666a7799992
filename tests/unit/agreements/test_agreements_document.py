"""Agreement documents: validation, signatures, the signed file, the store and decisions."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import dumps
from node.agreements.document import SignedAgreement, new_agreement, validate_document
from node.agreements.policy import agreements_of, authorize, check, recheck
from node.agreements.store import AgreementStore
from node.errors import AccessDenied, AgreementError
from node.identity.keys import ed25519_public_raw

FakeRuntime = Any
PROVIDER = ed25519.Ed25519PrivateKey.generate()
CONSUMER = ed25519.Ed25519PrivateKey.generate()
P_PUB = ed25519_public_raw(PROVIDER)
C_PUB = ed25519_public_raw(CONSUMER)


def doc(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    args: dict[str, Any] = {
        "federation": "gov",
        "provider": "health",
        "consumer": "statistics",
        "dataset": "visits",
        "purpose_code": "STAT-7",
        "purpose_text": "monthly statistics",
        "valid_from": now - 10,
        "valid_until": now + 3600,
        "modes": ["transfer", "federated"],
        "columns": {
            "district": {"treatment": "plain"},
            "person_id": {"treatment": "pseudonymize"},
            "age": {"treatment": "generalize", "params": {"band": 10}},
            "notes": {"treatment": "drop"},
        },
        "created": now,
    }
    args.update(over)
    return new_agreement(**args)


def test_sign_countersign_verify_and_file_round_trip() -> None:
    signed = SignedAgreement.sign(doc(), PROVIDER)
    signed.verify(P_PUB, None)
    with pytest.raises(AgreementError, match="not countersigned"):
        signed.verify(P_PUB, C_PUB)
    both = signed.countersign(CONSUMER)
    both.verify(P_PUB, C_PUB)
    again = SignedAgreement.from_bytes(both.to_bytes())
    assert again == both
    assert again.modes == ["federated", "transfer"]
    assert again.shared_columns == ["age", "district", "person_id"]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.__setitem__("consumer", "justice"), "provider signature"),
        (lambda d: d["columns"].__setitem__("notes", {"treatment": "plain"}), "provider signature"),
    ],
)
def test_altered_document_fails_verification(mutate: Any, match: str) -> None:
    signed = SignedAgreement.sign(doc(), PROVIDER).countersign(CONSUMER)
    obj = signed.to_json()
    mutate(obj["agreement"])
    with pytest.raises(AgreementError, match=match):
        SignedAgreement.from_json(obj).verify(P_PUB, C_PUB)


def test_countersignature_by_wrong_key_fails() -> None:
    signed = SignedAgreement.sign(doc(), PROVIDER).countersign(PROVIDER)
    with pytest.raises(AgreementError, match="consumer countersignature"):
        signed.verify(P_PUB, C_PUB)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"modes": ["download"]}, "modes must be"),
        ({"consumer": "health"}, "provider and consumer must differ"),
        ({"valid_until": 5, "valid_from": 10}, "valid_until must be after"),
        ({"columns": {}}, "at least one column"),
        ({"columns": {"a": {"treatment": "encrypt"}}}, "unknown treatment"),
        ({"columns": {"a": {"treatment": "plain", "params": {"x": 1}}}}, "takes no params"),
        ({"columns": {"a": {"treatment": "generalize", "params": {"to": "week"}}}}, "'to'"),
        ({"columns": {"a": {"treatment": "generalize", "params": {"band": 0}}}}, "'band'"),
        ({"purpose_code": ""}, "purpose"),
    ],
)
def test_new_agreement_refuses(over: dict[str, Any], match: str) -> None:
    with pytest.raises(AgreementError, match=match):
        doc(**over)


def test_file_refusals() -> None:
    good = SignedAgreement.sign(doc(), PROVIDER).to_json()
    with pytest.raises(AgreementError, match="not canonical JSON"):
        SignedAgreement.from_bytes(b'{"b":1, "a":2}')
    with pytest.raises(AgreementError, match="unknown fields"):
        SignedAgreement.from_json({**good, "x": 1})
    with pytest.raises(AgreementError, match="not base64"):
        SignedAgreement.from_json({**good, "provider_signature": "%%"})


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_parser_raises_only_agreement_errors(data: bytes) -> None:
    with contextlib.suppress(AgreementError):
        SignedAgreement.from_bytes(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=5), max_size=14))
def test_validate_raises_only_agreement_errors(obj: dict[str, Any]) -> None:
    with contextlib.suppress(AgreementError):
        validate_document(obj)


def test_store_lifecycle(tmp_path: Path) -> None:
    store = AgreementStore(tmp_path / "a.db")
    signed = SignedAgreement.sign(doc(), PROVIDER)
    proposed = store.add_proposed(signed)
    assert proposed.state == "proposed" and proposed.pseudonym_key is not None
    # A record that is logged or printed never shows its pseudonym key.
    assert "pseudonym_key" not in repr(proposed)
    assert proposed.pseudonym_key.hex() not in repr(proposed)
    assert repr(proposed.pseudonym_key)[2:-1] not in repr(proposed)
    with pytest.raises(AgreementError, match="not countersigned"):
        store.activate(signed)
    forged = SignedAgreement(
        {**signed.doc, "dataset": "other"}, signed.provider_signature, b"x" * 64
    )
    with pytest.raises(AgreementError, match="differs from the copy"):
        store.activate(forged)
    active = store.activate(signed.countersign(CONSUMER))
    assert active.state == "active" and active.pseudonym_key == proposed.pseudonym_key
    revoked = store.revoke(signed.id, "purpose ended")
    assert revoked.state == "revoked" and revoked.reason == "purpose ended"
    with pytest.raises(AgreementError, match="already revoked"):
        store.revoke(signed.id, "again")
    with pytest.raises(AgreementError, match="cannot return"):
        store.activate(signed.countersign(CONSUMER))
    store.close()
    assert AgreementStore(tmp_path / "a.db").get(signed.id).state == "revoked"


def _active(runtime: FakeRuntime, **over: Any) -> str:
    signed = SignedAgreement.sign(doc(**over), PROVIDER)
    store = agreements_of(runtime)
    store.add_proposed(signed)
    store.activate(signed.countersign(CONSUMER))
    return signed.id


def test_authorize_grants_an_active_agreement(provider_runtime: FakeRuntime) -> None:
    agreement = _active(provider_runtime)
    record = authorize(
        provider_runtime, agreement, mode="transfer", role="provider", peer="statistics"
    )
    assert record.signed.id == agreement
    assert provider_runtime.audit.entries == []


@pytest.mark.parametrize(
    ("over", "kwargs", "match"),
    [
        ({}, {"mode": "aggregate"}, "does not allow mode 'aggregate'"),
        ({}, {"peer": "justice"}, "names statistics as consumer, not justice"),
        ({}, {"role": "consumer"}, r"does not name this node \(health\) as consumer"),
        ({}, {"columns": ["notes"]}, "columns not granted by agreement .*: notes"),
        ({"valid_until": int(time.time()) - 1, "valid_from": 0}, {}, "expired at"),
        ({"valid_from": int(time.time()) + 999}, {}, "not valid until"),
    ],
)
def test_authorize_denies_and_records(
    provider_runtime: FakeRuntime, over: dict[str, Any], kwargs: dict[str, Any], match: str
) -> None:
    agreement = _active(provider_runtime, **over)
    args: dict[str, Any] = {"mode": "transfer", "role": "provider", "peer": "statistics"}
    args.update(kwargs)
    with pytest.raises(AccessDenied, match=match):
        authorize(provider_runtime, agreement, **args)
    [entry] = provider_runtime.audit.entries
    assert entry["event"] == "access.denied" and entry["outcome"] == "denied"
    assert entry["agreement"] == agreement
    assert "reason" in entry["detail"]


def test_default_deny_unknown_proposed_and_revoked(provider_runtime: FakeRuntime) -> None:
    with pytest.raises(AccessDenied, match="no agreement"):
        authorize(provider_runtime, "agr-" + "0" * 32, mode="transfer", role="provider")
    store = agreements_of(provider_runtime)
    signed = SignedAgreement.sign(doc(), PROVIDER)
    store.add_proposed(signed)
    with pytest.raises(AccessDenied, match="is proposed, not active"):
        authorize(provider_runtime, signed.id, mode="transfer", role="provider")
    agreement = _active(provider_runtime)
    recheck(provider_runtime, agreement)
    store.revoke(agreement, "stop")
    with pytest.raises(AccessDenied, match="was revoked"):
        recheck(provider_runtime, agreement)
    with pytest.raises(AccessDenied, match="was revoked"):
        authorize(provider_runtime, agreement, mode="transfer", role="provider")
    assert [e["event"] for e in provider_runtime.audit.entries] == ["access.denied"] * 3


def test_check_is_pure() -> None:
    signed = SignedAgreement.sign(doc(), PROVIDER).countersign(CONSUMER)
    from node.agreements.store import AgreementRecord

    record = AgreementRecord(signed, "active", None, 0, None, None)
    check(
        record,
        me="statistics",
        role="consumer",
        peer="health",
        mode="federated",
        now=int(time.time()),
    )
    assert dumps(signed.doc)
