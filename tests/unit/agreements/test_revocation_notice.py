"""Signed revocation notices: round trip and every refusal."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements.revocation import make_notice, open_notice
from node.agreements.workflow import MAX_REASON_LEN, check_reason
from node.errors import AgreementError
from node.exchange.receipt import make_receipt
from node.identity.keys import ed25519_public_raw

KEY = ed25519.Ed25519PrivateKey.generate()
PUBLIC = ed25519_public_raw(KEY)
FIELDS: dict[str, Any] = {
    "agreement": "agr-" + "ab" * 16,
    "digest": "sha256:" + "cd" * 32,
    "by": "health",
    "reason": "purpose ended",
    "time": 1_700_000_000,
}


def test_a_notice_opens_to_its_fields() -> None:
    body = open_notice(make_notice(KEY, **FIELDS), PUBLIC, "health")
    assert {k: body[k] for k in FIELDS} == FIELDS
    assert body["type"] == "fednode.revocation" and body["v"] == 1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda n: n["revocation"].__setitem__("reason", "other"), "does not verify under health"),
        (lambda n: n["revocation"].__setitem__("time", "1"), "must be int"),
        (lambda n: n["revocation"].__setitem__("extra", 1), "exactly the fields"),
        (lambda n: n["revocation"].__setitem__("type", "fednode.receipt"), "version/type"),
        (lambda n: n.__setitem__("signature", "***"), "not base64"),
        (lambda n: n.pop("signature"), "exactly 'revocation' and 'signature'"),
    ],
)
def test_tampered_notices_are_refused(mutate: Any, match: str) -> None:
    notice = make_notice(KEY, **FIELDS)
    mutate(notice)
    with pytest.raises(AgreementError, match=match):
        open_notice(notice, PUBLIC, "health")


def test_a_flipped_signature_byte_and_a_wrong_key_are_refused() -> None:
    notice = make_notice(KEY, **FIELDS)
    flipped = copy.deepcopy(notice)
    first = flipped["signature"][0]
    flipped["signature"] = ("B" if first == "A" else "A") + flipped["signature"][1:]
    with pytest.raises(AgreementError, match="does not verify"):
        open_notice(flipped, PUBLIC, "health")
    other = ed25519_public_raw(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(AgreementError, match="does not verify under statistics"):
        open_notice(notice, other, "statistics")


def test_a_receipt_is_not_a_notice() -> None:
    receipt = make_receipt(
        KEY, share_id=bytes(16), digest="sha256:00", rows=1, chunks=1, sender="health",
        recipient="statistics", agreement=FIELDS["agreement"], time=1,
    )  # fmt: skip
    with pytest.raises(AgreementError, match="exactly 'revocation' and 'signature'"):
        open_notice(receipt, PUBLIC, "health")


@pytest.mark.parametrize(
    ("reason", "match"),
    [("", "needs a reason"), ("  ", "needs a reason"), ("x" * 501, "501 characters, above 500")],
)
def test_rightly_signed_notices_with_an_empty_or_overlong_reason_are_refused(
    reason: str, match: str
) -> None:
    notice = make_notice(KEY, **{**FIELDS, "reason": reason})
    with pytest.raises(AgreementError, match=match):
        open_notice(notice, PUBLIC, "health")


def test_a_reason_of_exactly_the_limit_is_taken() -> None:
    check_reason("x" * MAX_REASON_LEN)
    notice = make_notice(KEY, **{**FIELDS, "reason": "x" * MAX_REASON_LEN})
    assert open_notice(notice, PUBLIC, "health")["reason"] == "x" * MAX_REASON_LEN


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("agreement", "agr-1", "names no agreement id: 'agr-1'"),
        ("agreement", "a" * 1_000_000, r"names no agreement id: 'a+\.\.\. \(1000002 characters"),
        ("by", "Health Dept", "is by no department: 'Health Dept'"),
        ("by", "h" * 1_000_000, r"is by no department: 'h+\.\.\. \(1000002 characters"),
    ],
)
def test_rightly_signed_notices_naming_no_agreement_or_department_are_refused_briefly(
    field: str, value: str, match: str
) -> None:
    notice = make_notice(KEY, **{**FIELDS, field: value})
    with pytest.raises(AgreementError, match=match) as refused:
        open_notice(notice, PUBLIC, "health")
    assert len(str(refused.value)) < 200
