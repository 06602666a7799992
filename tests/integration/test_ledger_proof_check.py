"""An auditor checks one entry's proof offline: ``ledger prove --json`` on a real node,
``ledger check-proof`` with only the file and the federation CA.

Each property has its negative case: a tampered entry, a proof under another
CA, a checkpoint without the witnesses the directory asks for, a directory
older than the auditor knows, and files that are not proofs at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.canonical import dumps, loads
from ledger.checkpoint import Note, parse_note
from node.identity.authority import Authority
from node.localfed import LocalFederation
from tests.integration.helpers import fednode

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(federation_factory: Any) -> LocalFederation:
    federation: LocalFederation = federation_factory(witness_threshold=1)
    return federation


def _check(proof: Path, ca: Path, *extra: str) -> Any:
    return fednode("ledger", "check-proof", proof, "--ca", ca, *extra)


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_an_auditor_checks_a_proof_offline_and_every_tampering_fails(
    fed: LocalFederation, tmp_path: Path
) -> None:
    home = fed.homes[sorted(fed.homes)[0]]
    done = fednode("ledger", "checkpoint", "--json", "--home", home)
    assert done.returncode == 0 and json.loads(done.stdout)["published"], done.stderr
    printed = fednode("ledger", "prove", "1", "--json", "--home", home, check=True).stdout
    document = json.loads(printed)
    proof = _write(tmp_path / "proof-1.json", document)

    good = _check(proof, fed.ca_pem, "--json")
    assert good.returncode == 0, good.stderr
    result = json.loads(good.stdout)
    assert result["seq"] == 1 and result["department"] == home.name
    assert len(result["cosigners"]) >= result["threshold"] == 1
    text = _check(proof, fed.ca_pem).stdout
    assert f"entry 1 ({result['event']}) of {home.name}'s ledger is in its checkpoint" in text

    # A changed byte of the entry: it is no longer on the path to the signed root.
    entry = loads(document["entry"].encode())
    entry["event"] = "share.sent" if entry["event"] != "share.sent" else "share.received"
    tampered = _write(tmp_path / "tampered.json", {**document, "entry": dumps(entry).decode()})
    refused = _check(tampered, fed.ca_pem)
    assert refused.returncode == 7, refused.stderr

    # The same proof claimed for another seq.
    moved = _write(tmp_path / "moved.json", {**document, "seq": 0})
    assert _check(moved, fed.ca_pem).returncode == 7

    # The checkpoint with its cosignatures removed: signed by the log alone.
    note = parse_note(document["note"].encode())
    own = tuple(line for line in note.signatures if line.name == document["origin"])
    alone = Note(text=note.text, signatures=own).encode()
    assert own and len(own) < len(note.signatures)
    unwitnessed = _write(tmp_path / "alone.json", {**document, "note": alone.decode()})
    refused = _check(unwitnessed, fed.ca_pem)
    assert refused.returncode == 7 and "below the threshold of 1" in refused.stderr

    # Another federation's CA: the directory in the proof does not verify under it.
    other = Authority.create(tmp_path / "other-ca", fed.federation)
    refused = _check(proof, other.cert_path)
    assert refused.returncode == 7 and "does not verify" in refused.stderr

    # An auditor who knows a newer directory refuses one made under an older.
    newer = str(json.loads(document["directory"])["directory"]["serial"] + 1)
    refused = _check(proof, fed.ca_pem, "--min-directory-serial", newer)
    assert refused.returncode == 7 and "older than the serial" in refused.stderr

    # Files that are not proofs are usage errors that say what to use instead.
    bundle = tmp_path / "bundle"
    fednode("ledger", "export", "--out", bundle, "--home", home, check=True)
    for wrong in (bundle, _write(tmp_path / "other.json", {"seq": 1})):
        refused = _check(wrong, fed.ca_pem)
        assert refused.returncode == 2, refused.stderr
        assert "fednode ledger verify" in refused.stderr
