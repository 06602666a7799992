"""What an operator who did not write fednode reads: every agreement option explains
itself, and refusals say what to do next."""

from __future__ import annotations

import argparse
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements import workflow
from node.agreements.document import SignedAgreement, new_agreement
from node.catalog import treatments
from node.cli.main import build_parser
from node.errors import AgreementError


def _commands(group: str) -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [groups] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [
        a for a in groups.choices[group]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return dict(commands.choices)


@pytest.mark.parametrize("command", ["create", "countersign", "import", "list", "show", "revoke"])
def test_every_agreement_argument_has_help_and_every_command_an_example(command: str) -> None:
    parser = _commands("agreement")[command]
    silent = [
        a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert silent == []
    assert "example:" in (parser.description or "")


def test_create_help_explains_modes_and_that_a_date_ends_at_its_midnight() -> None:
    text = _commands("agreement")["create"].format_help()
    for mode in ("transfer", "federated", "aggregate"):
        assert f"\n  {mode} " in text
    assert "00:00 UTC that day" in text


def test_revoke_help_says_where_the_reason_goes_and_how_it_is_erased() -> None:
    text = " ".join(_commands("agreement")["revoke"].format_help().split())
    assert "sent to the other party" in text and "fednode ledger erase" in text


def test_countersigning_on_the_wrong_node_says_where_to_run_it(consumer_runtime: Any) -> None:
    now = int(time.time())
    doc = new_agreement(
        federation="gov", provider="health", consumer="justice", dataset="visits",
        purpose_code="STAT-7", purpose_text="", valid_from=now, valid_until=now + 60,
        modes=["transfer"], columns={"district": {"treatment": "plain"}}, created=now,
    )  # fmt: skip
    signed = SignedAgreement.sign(doc, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(
        AgreementError, match="is for consumer justice, this node is statistics"
    ) as refused:
        workflow.countersign(consumer_runtime, signed)
    assert refused.value.hint == "countersign it on justice's node (check --home)"


@pytest.mark.parametrize(
    ("spec", "match", "hint"),
    [
        (
            {"treatment": "hash"},
            "unknown treatment 'hash'",
            "use one of plain, pseudonymize, generalize, drop",
        ),
        (
            {"treatment": "generalize"},
            r"generalize needs one parameter, to=UNIT \(minute\|hour\|day\|month\|year\) "
            "for a time or band=WIDTH for an integer",
            "e.g. --column age=generalize:band=10 or --column age=generalize:to=hour",
        ),
    ],
)
def test_treatment_refusals_speak_the_command_line(
    spec: dict[str, Any], match: str, hint: str
) -> None:
    with pytest.raises(AgreementError, match=match) as refused:
        treatments.validate_spec("age", spec)
    assert refused.value.hint == hint
