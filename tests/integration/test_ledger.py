"""The audit ledger across real node processes: recorded RPCs, witnessed checkpoints,
a forked checkpoint refused and recorded as an incident, and an offline audit of all bundles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from ledger.canonical import dumps, loads
from ledger.checkpoint import sign_checkpoint
from ledger.merkle import hash_leaf
from node.identity import certs
from node.identity.directory import parse_directory
from node.identity.keys import load_ed25519
from node.localfed import LocalFederation
from protocols.fednode.v1 import ledger_pb2, ledger_pb2_grpc
from tests.integration.helpers import fednode, status

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(federation_factory: Any) -> LocalFederation:
    federation: LocalFederation = federation_factory(witness_threshold=2)
    return federation


def _json(*args: str | Path) -> Any:
    return json.loads(fednode(*args, "--json", check=True).stdout)


def _client(fed: LocalFederation, caller: str, target: str) -> ledger_pb2_grpc.LedgerStub:
    home = fed.homes[caller]
    directory = parse_directory(
        (fed.root / "directory.json").read_bytes(), fed.authority.ca_certificate()
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(home / "ca.pem").read_bytes(),
        private_key=(home / "keys" / "tls.key").read_bytes(),
        certificate_chain=(home / "tls" / "node.pem").read_bytes(),
    )
    channel = grpc.secure_channel(
        directory.get(target).endpoint,
        credentials,
        options=[("grpc.ssl_target_name_override", certs.dns_name("city", target))],
    )
    return ledger_pb2_grpc.LedgerStub(channel)


def test_ledger_across_nodes(fed: LocalFederation, tmp_path: Path) -> None:
    homes = fed.homes
    status(homes["traffic"])  # Node.Info calls to both peers: recorded on all three ledgers.

    first = _json("ledger", "checkpoint", "--home", homes["traffic"])
    assert first["published"], first
    assert sorted(first["cosigners"]) == ["health", "security"]
    status(homes["traffic"])
    second = _json("ledger", "checkpoint", "--home", homes["traffic"])
    assert second["published"] and second["size"] > first["size"]
    for department in ("security", "health"):
        assert _json("ledger", "checkpoint", "--home", homes[department])["published"]

    # Every RPC is recorded on the serving side, with the caller from its certificate.
    shown = _json(
        "ledger", "show", "--home", homes["security"], "--type", "rpc", "--peer", "traffic"
    )
    methods = {(e["event"], e["detail"]["method"]) for e in shown}
    assert ("rpc.started", "/fednode.v1.Node/Info") in methods
    assert ("rpc.finished", "/fednode.v1.Ledger/AddCheckpoint") in methods
    finished = [e for e in shown if e["event"] == "rpc.finished"]
    assert all(e["outcome"] == "ok" and e["detail"]["code"] == "OK" for e in finished)
    admin = _json("ledger", "show", "--home", homes["traffic"], "--type", "rpc.started")
    assert any(e["actor"] == "operator" for e in admin)
    cosigned = _json("ledger", "show", "--home", homes["security"], "--type", "witness.cosigned")
    assert {e["detail"]["size"] for e in cosigned} >= {first["size"], second["size"]}

    # An inclusion proof against the latest published checkpoint, checked by the CLI.
    proof = fednode("ledger", "prove", "3", "--home", homes["traffic"], check=True)
    assert "entry 3" in proof.stdout and "is included in checkpoint size" in proof.stdout

    # A forked checkpoint: traffic's real key signs a second root for a size the
    # witness already cosigned. The witness refuses and records an incident.
    key = load_ed25519(homes["traffic"] / "keys" / "signing.key")
    forged = sign_checkpoint("fednode/city/traffic", second["size"], hash_leaf(b"fork"), key)
    stub = _client(fed, "traffic", "security")
    with pytest.raises(grpc.RpcError) as refused:
        stub.AddCheckpoint(
            ledger_pb2.AddCheckpointRequest(old_size=second["size"], note=forged), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    incidents = _json("ledger", "show", "--home", homes["security"], "--type", "witness.incident")
    assert incidents and incidents[-1]["peer"] == "traffic"
    assert "second root" in incidents[-1]["detail"]["reason"]
    # A department may not submit another department's log.
    with pytest.raises(grpc.RpcError) as foreign:
        _client(fed, "health", "security").AddCheckpoint(
            ledger_pb2.AddCheckpointRequest(old_size=0, note=forged), timeout=10
        )
    assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Publish once more so the incident is covered, then audit all three offline.
    for department in homes:
        assert _json("ledger", "checkpoint", "--home", homes[department])["published"]
    bundles = []
    for department in homes:
        out = tmp_path / f"{department}.zip"
        fednode("ledger", "export", "--out", out, "--home", homes[department], check=True)
        bundles.append(out)
    verified = fednode("ledger", "verify", *bundles, "--ca", fed.ca_pem, check=True)
    assert "verified" in verified.stdout
    fednode("ledger", "fsck", "--home", homes["security"], check=True)

    # A tampered copy fails with one line naming the entry, and exit code 7.
    work = tmp_path / "tampered"
    fednode("ledger", "export", "--out", work, "--home", homes["health"], check=True)
    lines = (work / "entries.jsonl").read_bytes().split(b"\n")
    fields = loads(lines[2])
    fields["outcome"] = "denied" if fields["outcome"] == "ok" else "ok"
    lines[2] = dumps(fields)
    (work / "entries.jsonl").write_bytes(b"\n".join(lines))
    bad = fednode("ledger", "verify", work, "--ca", fed.ca_pem)
    assert bad.returncode == 7
    assert "entry seq 3: prev" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 2
