"""Encrypted shares between real node processes: the happy path and every refusal.

Two departments run as real ``fednode serve`` processes with certificates from
a real test CA: ``health`` provides, ``statistics`` consumes. Stream-tampering
cases replace the provider with a hand-built malicious gRPC server that holds
health's real certificate and signing key, so the consumer's verification is
what is under test. Every refusal must leave no visible output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.canonical import dumps
from node.admin.client import invoke
from node.agreements.document import SignedAgreement, new_agreement
from node.config import load_config
from node.errors import AccessDenied
from node.exchange import envelope
from node.exchange.envelope import EnvelopeSealer
from node.identity import keys
from node.identity.keys import HPKE_SUITE, hpke_public_from_bytes
from node.localfed import DepartmentSpec, LocalFederation
from protocols.fednode.v1 import exchange_pb2, exchange_pb2_grpc
from tests.integration.helpers import exchange_stub, fednode

pytestmark = pytest.mark.integration

DEPARTMENTS = [
    DepartmentSpec("health", "Health Commission"),
    DepartmentSpec("statistics", "Statistics Bureau"),
]
PEOPLE = 5_000


def start(fed: LocalFederation, department: str) -> None:
    fed.start(department)
    fed.wait_ready([department])


def sample_table(rows: int = PEOPLE) -> pa.Table:
    return pa.table(
        {
            "person_id": [f"P{i:07d}" for i in range(rows)],
            "age": pa.array([i % 97 for i in range(rows)], pa.int32()),
            "district": [f"district-{i % 13}" for i in range(rows)],
            "diagnosis": [f"code-{i % 31}" for i in range(rows)],
            "income": pa.array([i * 7 for i in range(rows)], pa.int64()),
        }
    )


def ledger_events(home: Path) -> list[dict[str, Any]]:
    path = load_config(home).ledger_dir / "ledger.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT body FROM entries ORDER BY seq").fetchall()
    return [json.loads(bytes(r[0])) for r in rows]


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def admin(fed: LocalFederation, department: str, command: str, **args: Any) -> dict[str, Any]:
    """Call a node's admin socket in-process (setup steps; the CLI itself is tested separately)."""
    return invoke(fed.homes[department], command, args)


VISITS_COLUMNS: dict[str, Any] = {
    "person_id": {"treatment": "pseudonymize"},
    "age": {"treatment": "generalize", "params": {"band": 10}},
    "district": {"treatment": "plain"},
    "diagnosis": {"treatment": "drop"},
}


def agreement_file(
    fed: LocalFederation,
    tmp: Path,
    *,
    dataset: str = "visits",
    valid_seconds: int = 86_400,
    columns: dict[str, Any] | None = None,
    cli: bool = False,
) -> tuple[str, Path]:
    """health draws up an agreement; statistics countersigns it and pushes it back."""
    file = tmp / f"{dataset}.agreement"
    if cli:
        fednode(
            "agreement", "create", "--home", fed.homes["health"], "--consumer", "statistics",
            "--dataset", dataset, "--purpose-code", "STAT-7", "--purpose", "monthly statistics",
            "--valid-until", f"+{valid_seconds}s", "--mode", "transfer",
            "--column", "person_id=pseudonymize", "--column", "age=generalize:band=10",
            "--column", "district=plain", "--column", "diagnosis=drop", "--out", file, check=True,
        )  # fmt: skip
        fednode(
            "agreement",
            "countersign",
            file,
            "--push",
            "--home",
            fed.homes["statistics"],
            check=True,
        )
    else:
        created = admin(
            fed, "health", "agreement.create", consumer="statistics", dataset=dataset,
            purpose_code="STAT-7", purpose_text="monthly statistics",
            valid_until=int(time.time()) + valid_seconds, modes=["transfer"],
            columns=columns or VISITS_COLUMNS,
        )  # fmt: skip
        file.write_bytes(dumps({k: created[k] for k in ("agreement", "provider_signature")}))
        pushed = admin(
            fed, "statistics", "agreement.countersign",
            agreement_b64=base64.b64encode(file.read_bytes()).decode(), push=True,
        )  # fmt: skip
        assert pushed["pushed"] and pushed["provider_state"] == "active", pushed
    agreement_id = json.loads(file.read_bytes())["agreement"]["id"]
    return agreement_id, file


@pytest.fixture
def pair(federation_factory: Any, tmp_path: Path) -> LocalFederation:
    fed: LocalFederation = federation_factory(DEPARTMENTS, start=False)
    start(fed, "health")
    start(fed, "statistics")
    data = tmp_path / "visits.parquet"
    pq.write_table(sample_table(), data, row_group_size=1000)
    admin(
        fed, "health", "dataset.add", name="visits", path=str(data), labels={"district": "public"}
    )
    return fed


def fetch(
    fed: LocalFederation, agreement_id: str, out: Path, *extra: str, provider: str = "health"
) -> Any:
    return fednode(
        "share", "fetch", "--home", fed.homes["statistics"], "--from", provider,
        "--agreement", agreement_id, "--out", out, *extra,
    )  # fmt: skip


# --- the happy path ---------------------------------------------------------


def test_share_end_to_end(pair: LocalFederation, tmp_path: Path) -> None:
    shown = fednode("dataset", "show", "visits", "--json", "--home", pair.homes["health"])
    labels = {c["name"]: c["label"] for c in json.loads(shown.stdout)["columns"]}
    assert labels == {
        "person_id": "personal",
        "age": "personal",
        "district": "public",
        "diagnosis": "personal",
        "income": "internal",
    }
    listing = fednode("dataset", "list", "--home", pair.homes["health"], check=True)
    assert "visits" in listing.stdout and "5,000" in listing.stdout
    agreement_id, _ = agreement_file(pair, tmp_path, cli=True)
    listing = fednode("agreement", "list", "--json", "--home", pair.homes["health"], check=True)
    assert json.loads(listing.stdout)["agreements"][0]["state"] == "active"
    shown = fednode("agreement", "show", agreement_id, "--home", pair.homes["health"], check=True)
    assert f"{agreement_id}  [active]" in shown.stdout and " UTC to " in shown.stdout
    assert "person_id" in shown.stdout and "generalize (band=10)" in shown.stdout
    raw = fednode("agreement", "show", agreement_id, "--json", "--home", pair.homes["health"])
    assert json.loads(raw.stdout)["state"] == "active"
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    out = out_dir / "visits.parquet"
    result = fetch(pair, agreement_id, out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == PEOPLE and summary["receipt_acknowledged"]
    table = pq.read_table(out)
    # Columns not named never leave; dropped ones neither; the rest are treated.
    assert table.column_names == ["person_id", "age", "district"]
    assert table["person_id"][0].as_py() != "P0000000" and len(table["person_id"][0].as_py()) == 64
    assert table["age"][15].as_py() == "10-19"
    assert visible(out_dir) == ["visits.parquet"]

    sent = [e for e in ledger_events(pair.homes["health"]) if e.get("event") == "share.sent"]
    received = [
        e for e in ledger_events(pair.homes["statistics"]) if e.get("event") == "share.received"
    ]
    assert len(sent) == 1 and len(received) == 1
    # The consumer's operator fetched; the provider acted on a peer's request alone.
    assert received[0]["actor"] == "operator" and sent[0]["actor"] is None
    assert sent[0]["digest"] == received[0]["digest"] == summary["digest"]
    assert sent[0]["detail"]["share_id"] == received[0]["detail"]["share_id"] == summary["share_id"]
    receipt = sent[0]["detail"]["receipt"]["receipt"]
    assert receipt["digest"] == summary["digest"] and receipt["rows"] == PEOPLE

    # Arrow IPC output, and a column subset, work the same way.
    arrow = out_dir / "subset.arrow"
    result = fetch(pair, agreement_id, arrow, "--columns", "district", "--json")
    assert result.returncode == 0, result.stderr
    assert pa.ipc.open_file(arrow).read_all().column_names == ["district"]
    # Every operator command above succeeded, and each node's ledger says so.
    for department in ("health", "statistics"):
        outcomes = {
            e["outcome"]
            for e in ledger_events(pair.homes[department])
            if e["event"] == "rpc.finished" and e["detail"]["method"].endswith("Admin/Invoke")
        }
        assert outcomes == {"ok"}, (department, outcomes)


# --- refusals by the real provider --------------------------------------------


def test_column_not_in_agreement_is_refused(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(pair, tmp_path)
    out = tmp_path / "out" / "x.parquet"
    out.parent.mkdir()
    for column in ("income", "diagnosis"):
        result = fetch(pair, agreement_id, out, "--columns", f"district,{column}")
        assert result.returncode == 6, result.stderr
        assert f"columns not granted by agreement {agreement_id}: {column}" in result.stderr
    assert visible(out.parent) == []
    denied = [e for e in ledger_events(pair.homes["health"]) if e.get("event") == "access.denied"]
    assert len(denied) == 2 and denied[0]["peer"] == "statistics"
    # The consumer's ledger records the operator's two refused commands as refused.
    fetches = [
        e
        for e in ledger_events(pair.homes["statistics"])
        if e["event"] == "rpc.finished" and e["detail"].get("command") == "share.fetch"
    ]
    assert [(e["outcome"], e["detail"]["code"]) for e in fetches] == [
        ("denied", "PERMISSION_DENIED")
    ] * 2


def test_malformed_and_oversized_requests_are_refused_and_recorded_briefly(
    pair: LocalFederation,
) -> None:
    """A peer cannot make the provider's ledger carry what it likes: a request
    whose agreement id is not one, or that names megabytes of columns, is
    refused before any lookup, and the denial quotes it only briefly."""
    stub = exchange_stub(pair, "statistics", "health")
    requests = [
        exchange_pb2.ShareRequest(agreement_id="a" * 3_000_000),
        exchange_pb2.ShareRequest(agreement_id="agr-" + "0" * 32, columns=["c" * 1000] * 3000),
    ]
    before = len(ledger_events(pair.homes["health"]))
    for request in requests:
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Fetch(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(str(refused.value.details())) < 300
    entries = ledger_events(pair.homes["health"])[before:]
    denied = [e for e in entries if e["event"] == "access.denied"]
    assert len(denied) == 2 and all(e["peer"] == "statistics" for e in denied)
    assert "malformed share request" in denied[0]["detail"]["reason"]
    assert max(len(json.dumps(e)) for e in entries) < 2000


def test_an_unusable_output_path_is_refused_before_the_provider_is_asked(
    pair: LocalFederation, tmp_path: Path
) -> None:
    agreement_id, _ = agreement_file(pair, tmp_path)
    before = len(ledger_events(pair.homes["health"]))
    result = fetch(pair, agreement_id, tmp_path / "no-such-folder" / "x.parquet")
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "mkdir" in result.stderr
    for out, told in (
        (tmp_path / "x.csv", "cannot tell the output format"),
        (tmp_path, "is a directory"),
    ):
        result = fetch(pair, agreement_id, out)
        assert result.returncode == 2 and told in result.stderr, result.stderr
    # The provider never heard of it: no share started, no call at all.
    assert ledger_events(pair.homes["health"])[before:] == []


def test_expired_agreement_is_refused(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(pair, tmp_path, valid_seconds=3)
    time.sleep(3.5)
    out = tmp_path / "x.parquet"
    result = fetch(pair, agreement_id, out)
    assert result.returncode == 6
    assert f"agreement {agreement_id} expired at" in result.stderr
    assert "rows" not in result.stderr  # refused before any data: the error alone, no bar
    assert not out.exists()


def big_table(megabytes: int) -> pa.Table:
    rows = megabytes * 1024 * 1024 // 48
    ids = pa.array(range(rows), pa.int64())
    padding = "-record-of-a-district-with-some-padding-"
    return pa.table(
        {"district": pc.binary_join_element_wise(pc.cast(ids, pa.string()), padding, "")}
    )


def slow_share_in_flight(
    pair: LocalFederation, tmp_path: Path
) -> tuple[str, Path, subprocess.Popen[str]]:
    """A 64 MB share fetched by the CLI at 2 MB/s, still running when this returns.

    The table is larger than the chunks buffered in transit (a few 4 MiB
    chunks), so the provider is still producing; its padding would compress to
    almost nothing, so the chunks travel uncompressed.
    """
    big = tmp_path / "big.parquet"
    pq.write_table(big_table(64), big)
    admin(pair, "health", "dataset.add", name="big", path=str(big))
    agreement_id, _ = agreement_file(
        pair, tmp_path, dataset="big", columns={"district": {"treatment": "plain"}}
    )
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "share", "fetch",
         "--home", str(pair.homes["statistics"]), "--from", "health",
         "--agreement", agreement_id, "--out", str(out_dir / "big.parquet"),
         "--limit-rate", "2000000", "--compression", "none", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)
    assert process.poll() is None, process.communicate()
    return agreement_id, out_dir, process


def test_agreement_revoked_mid_stream(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id, out_dir, process = slow_share_in_flight(pair, tmp_path)
    admin(pair, "health", "agreement.revoke", id=agreement_id, reason="test")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 6, stderr
    assert "revoked" in stderr
    assert visible(out_dir) == []

    # Whichever side checks first stops it: the provider at its next chunk, or the
    # consumer, notified of the revocation, at the next chunk it receives. Either
    # way the provider's ledger records how its share ended (the provider learns of
    # the consumer leaving a moment after the CLI exits, hence the bounded wait).
    def ended(e: dict[str, Any]) -> bool:
        if e.get("event") == "access.denied":
            return "stopped" in e["detail"]["reason"]
        return e.get("event") == "share.failed" and (
            e["detail"]["reason"] == "the consumer ended the share before its end"
        )

    deadline = time.monotonic() + 15
    events = ledger_events(pair.homes["health"])
    while not any(ended(e) for e in events) and time.monotonic() < deadline:
        time.sleep(0.2)
        events = ledger_events(pair.homes["health"])
    assert any(e.get("event") == "agreement.revoked" for e in events)
    assert any(ended(e) for e in events), [e["event"] for e in events[-6:]]


def test_ctrl_c_cancels_the_share_and_keeps_nothing(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id, out_dir, process = slow_share_in_flight(pair, tmp_path)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    # The node stops the share at its next chunk and removes what it had written;
    # long enough for the share to have finished had it gone on is 64 MB at 2 MB/s.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        failed = [
            e for e in ledger_events(pair.homes["statistics"]) if e["event"] == "share.failed"
        ]
        if failed:
            break
        time.sleep(0.2)
    assert failed and "cancelled" in failed[-1]["detail"]["reason"], failed
    assert visible(out_dir) == []
    consumer = {e["event"] for e in ledger_events(pair.homes["statistics"])}
    assert "share.received" not in consumer
    assert "share.sent" not in {e["event"] for e in ledger_events(pair.homes["health"])}
    # The node is none the worse: the same share runs to the end when left alone.
    done = fetch(pair, agreement_id, out_dir / "big.parquet", "--json")
    assert done.returncode == 0, done.stderr
    assert visible(out_dir) == ["big.parquet"]


def test_peer_not_in_directory(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id, _ = agreement_file(pair, tmp_path)
    out = tmp_path / "x.parquet"
    result = fetch(pair, agreement_id, out, provider="finance")
    assert result.returncode == 4, result.stderr
    assert "finance" in result.stderr and "directory" in result.stderr
    assert not out.exists()


def test_agreement_import_path_without_push(pair: LocalFederation, tmp_path: Path) -> None:
    file = tmp_path / "manual.agreement"
    created = admin(
        pair, "health", "agreement.create", consumer="statistics", dataset="visits",
        purpose_code="X", valid_until=int(time.time()) + 600, modes=["transfer"],
        columns={"district": {"treatment": "plain"}},
    )  # fmt: skip
    file.write_bytes(dumps({k: created[k] for k in ("agreement", "provider_signature")}))
    agreement_id = created["agreement"]["id"]
    out = tmp_path / "x.parquet"
    args = {"from": "health", "agreement": agreement_id, "out": str(out)}
    with pytest.raises(AccessDenied, match="no agreement"):  # the consumer holds none yet
        admin(pair, "statistics", "share.fetch", **args)
    fednode("agreement", "countersign", file, "--home", pair.homes["statistics"], check=True)
    with pytest.raises(AccessDenied, match="is proposed, not active"):
        admin(pair, "statistics", "share.fetch", **args)
    tampered = json.loads(file.read_bytes())
    tampered["agreement"]["columns"]["income"] = {"treatment": "plain", "params": {}}
    bad = tmp_path / "bad.agreement"
    bad.write_bytes(dumps(tampered))
    result = fednode("agreement", "import", bad, "--home", pair.homes["health"])
    assert result.returncode == 6 and "signature" in result.stderr
    fednode("agreement", "import", file, "--home", pair.homes["health"], check=True)
    fetched = fetch(pair, agreement_id, out)
    assert fetched.returncode == 0, fetched.stderr
    assert "rows in" in fetched.stdout and pq.read_table(out).num_rows == PEOPLE
    assert f"{PEOPLE:,} rows" in fetched.stderr  # the progress bar, once data flows


# --- a malicious provider -----------------------------------------------------


class MaliciousProvider(exchange_pb2_grpc.ExchangeServicer):  # type: ignore[misc]
    """A real gRPC server with health's certificate and signing key that misbehaves on purpose."""

    def __init__(self, home: Path, recipient_hpke: bytes, agreement_id: str) -> None:
        config = load_config(home)
        self.signing_key = keys.load_ed25519(config.signing_key_path)
        self.recipient_hpke = recipient_hpke
        self.agreement_id = agreement_id
        self.mode = "honest"
        self.recorded: list[Any] = []
        #: When set, builds the frames of every share instead of :meth:`frames`.
        self.script: Callable[[bytes], list[Any]] | None = None
        #: When set, called with each chunk's index before the chunk is sent.
        self.before_chunk: Callable[[int], None] | None = None

    def frames(self, hpke_public: bytes) -> list[Any]:
        table = pa.table({"district": [f"d{i}" for i in range(3000)]})
        sealer = EnvelopeSealer(
            signing_key=self.signing_key, sender="health", recipient="statistics",
            recipient_hpke_public=hpke_public, agreement=self.agreement_id, dataset="visits",
            schema=table.schema, chunk_limit=4096,
        )  # fmt: skip
        out = [exchange_pb2.ShareFrame(header=sealer.header)]
        for batch in table.to_batches(max_chunksize=500):
            out += [exchange_pb2.ShareFrame(chunk=c) for c in sealer.add(batch)]
        final, trailer = sealer.finish()
        return [
            *out,
            exchange_pb2.ShareFrame(chunk=final),
            exchange_pb2.ShareFrame(trailer=trailer),
        ]

    def forged(
        self,
        hpke_public: bytes,
        schema_bytes: bytes,
        messages: list[tuple[bytes, int]],
        *,
        dataset: str = "visits",
    ) -> list[Any]:
        """Frames around arbitrary schema bytes and IPC messages, validly signed and sealed.

        No sealer would build them: this is a sender that holds the key and
        writes whatever bytes it likes, so only the consumer's checks stand.
        """
        share_id, key = os.urandom(16), AESGCM.generate_key(256)
        wrapped = HPKE_SUITE.encrypt(
            key,
            hpke_public_from_bytes(hpke_public),
            info=envelope.hpke_info(share_id, "health", "statistics"),
        )
        now = int(time.time())
        body = envelope._header_body(
            share_id=share_id, sender="health", recipient="statistics",
            agreement=self.agreement_id, dataset=dataset, created=now, expires=now + 3600,
            compression="none", rows_hint=0, wrapped_key=wrapped, schema_bytes=schema_bytes,
        )  # fmt: skip
        header = body + self.signing_key.sign(envelope.HEADER_SIGNATURE_CONTEXT + body)
        aad, aead, digest = hashlib.sha256(header).digest(), AESGCM(key), hashlib.sha256()
        frames = [exchange_pb2.ShareFrame(header=header)]
        for index, (message, _) in enumerate(messages):
            final = index == len(messages) - 1
            digest.update(message)
            sealed = aead.encrypt(envelope.chunk_nonce(index, final), message, aad)
            frames.append(
                exchange_pb2.ShareFrame(chunk=envelope.encode_chunk_frame(index, final, sealed))
            )
        rows = sum(n for _, n in messages)
        signed = envelope._trailer_message(aad, rows, len(messages), digest.digest())
        trailer = (
            envelope._U64.pack(rows)
            + envelope._U64.pack(len(messages))
            + digest.digest()
            + self.signing_key.sign(signed)
        )
        frames.append(exchange_pb2.ShareFrame(trailer=trailer))
        return frames

    def Fetch(self, request: Any, context: Any) -> Iterator[Any]:
        if self.mode == "wrong-key":
            frames = self.frames(keys.generate_hpke().public_bytes)
        elif self.mode == "replay" and self.recorded:
            frames = self.recorded
        else:
            frames = (self.script or self.frames)(self.recipient_hpke)
            self.recorded = frames
        header, chunks, trailer = frames[0], frames[1:-1], frames[-1]
        if self.mode == "tamper":
            sealed = bytearray(chunks[2].chunk)
            sealed[30] ^= 0x40
            chunks = [*chunks[:2], exchange_pb2.ShareFrame(chunk=bytes(sealed)), *chunks[3:]]
        elif self.mode == "reorder":
            chunks = [chunks[0], chunks[2], chunks[1], *chunks[3:]]
        elif self.mode == "truncate":
            chunks, trailer = chunks[:3], None
        yield header
        for index, chunk in enumerate(chunks):
            if self.before_chunk is not None:
                self.before_chunk(index)
            yield chunk
        if trailer is not None:
            yield trailer

    def Acknowledge(self, request: Any, context: Any) -> Any:
        return exchange_pb2.ReceiptAck(ledger_seq=1)


def serve_malicious(
    fed: LocalFederation, tmp_path: Path, valid_seconds: int = 3600
) -> tuple[grpc.Server, MaliciousProvider, str, int]:
    """Start the consumer and, in health's place, a malicious provider under a fresh
    agreement the consumer countersigned; returns the server, the servicer, the
    agreement id and the agreement's end."""
    start(fed, "statistics")
    health = load_config(fed.homes["health"])
    statistics = load_config(fed.homes["statistics"])
    now = int(time.time())
    doc = new_agreement(
        federation=fed.federation, provider="health", consumer="statistics", dataset="visits",
        purpose_code="X", purpose_text="", valid_from=now - 5, valid_until=now + valid_seconds,
        modes=["transfer"], columns={"district": {"treatment": "plain"}}, created=now,
    )  # fmt: skip
    signed = SignedAgreement.sign(doc, keys.load_ed25519(health.signing_key_path))
    file = tmp_path / "evil.agreement"
    file.write_bytes(signed.to_bytes())
    admin(
        fed, "statistics", "agreement.countersign",
        agreement_b64=base64.b64encode(file.read_bytes()).decode(),
    )  # fmt: skip
    servicer = MaliciousProvider(
        fed.homes["health"], keys.load_hpke(statistics.hpke_key_path).public_bytes, signed.id
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    exchange_pb2_grpc.add_ExchangeServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(health.tls_key_path.read_bytes(), health.cert_path.read_bytes())],
        root_certificates=health.ca_cert_path.read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(health.listen, credentials)
    server.start()
    return server, servicer, signed.id, now + valid_seconds


@pytest.fixture
def malicious(
    federation_factory: Any, tmp_path: Path
) -> Iterator[tuple[LocalFederation, MaliciousProvider, str]]:
    fed: LocalFederation = federation_factory(DEPARTMENTS, start=False)
    server, servicer, agreement_id, _ = serve_malicious(fed, tmp_path)
    yield fed, servicer, agreement_id
    server.stop(0)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("tamper", "chunk 2 failed authentication (AES-GCM tag mismatch)"),
        ("truncate", "stream ended after 3 chunks without the final chunk"),
        ("reorder", "chunks out of order: chunk 2 arrived before chunk 1"),
        ("wrong-key", "content key does not unwrap with this node's HPKE key"),
    ],
)
def test_consumer_refuses_a_malicious_stream(
    malicious: tuple[LocalFederation, MaliciousProvider, str],
    tmp_path: Path,
    mode: str,
    message: str,
) -> None:
    fed, servicer, agreement_id = malicious
    servicer.mode = mode
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    result = fetch(fed, agreement_id, out_dir / "x.parquet")
    assert result.returncode == 7, result.stderr
    assert message in result.stderr
    assert visible(out_dir) == []
    failures = [
        e for e in ledger_events(fed.homes["statistics"]) if e.get("event") == "share.failed"
    ]
    assert failures and message in failures[-1]["detail"]["reason"]


def test_consumer_refuses_a_replayed_share(
    malicious: tuple[LocalFederation, MaliciousProvider, str], tmp_path: Path
) -> None:
    fed, servicer, agreement_id = malicious
    servicer.mode = "replay"
    first = fetch(fed, agreement_id, tmp_path / "first.parquet")
    assert first.returncode == 0, first.stderr
    result = fetch(fed, agreement_id, tmp_path / "again.parquet")
    assert result.returncode == 7, result.stderr
    assert "already received; refusing a replay" in result.stderr
    assert not (tmp_path / "again.parquet").exists()
    assert pq.read_table(tmp_path / "first.parquet").num_rows == 3000


def share_failures(fed: LocalFederation) -> list[dict[str, Any]]:
    return [e for e in ledger_events(fed.homes["statistics"]) if e.get("event") == "share.failed"]


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def one_row_bomb(items: pa.Array, declared: int) -> tuple[bytes, bytes]:
    """The schema and message of one ``large_list`` row whose items node (and end
    offset) declare ``declared`` items; the items' type has no bytes per item."""
    mark = len(items).to_bytes(8, "little")
    column = pa.LargeListArray.from_arrays(pa.array([0, len(items)], pa.int64()), items)
    batch = pa.record_batch([column], names=["district"])
    message = batch.serialize().to_pybytes()
    assert message.count(mark) >= 2
    return batch.schema.serialize().to_pybytes(), message.replace(
        mark, declared.to_bytes(8, "little")
    )


_MARK = 0x01234567  # a length that occurs nowhere else in the message


@pytest.mark.parametrize(
    ("items", "out_name", "extra", "message"),
    [
        (pa.nulls(_MARK), "x.parquet", (), "holds a null type below the top level"),
        (
            pa.StructArray.from_buffers(pa.struct([]), _MARK, [None]),
            "x.arrow",
            ("--validate",),
            "its field nodes hold 134217729 elements; a chunk holds at most 16777216",
        ),
    ],
    ids=["list-of-nulls", "list-of-empty-structs"],
)
def test_a_tiny_chunk_declaring_a_huge_nested_column_is_refused(
    malicious: tuple[LocalFederation, MaliciousProvider, str],
    tmp_path: Path,
    items: pa.Array,
    out_name: str,
    extra: tuple[str, ...],
    message: str,
) -> None:
    """A message of about 200 bytes declares 2**27 nested items: the consumer
    refuses it from the metadata, and its memory does not grow with the claim."""
    fed, servicer, agreement_id = malicious
    schema, bomb = one_row_bomb(items, 1 << 27)
    assert len(bomb) < 300
    servicer.script = lambda hpke: servicer.forged(hpke, schema, [(bomb, 1)])
    node = fed.processes["statistics"].pid
    before = peak_rss_mib(node)
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    result = fetch(fed, agreement_id, out_dir / out_name, *extra)
    assert result.returncode == 7, result.stderr
    assert message in result.stderr
    assert peak_rss_mib(node) - before < 100
    assert visible(out_dir) == []
    assert message in share_failures(fed)[-1]["detail"]["reason"]


def test_a_header_naming_a_column_in_bytes_that_are_not_utf8_is_refused_and_recorded(
    malicious: tuple[LocalFederation, MaliciousProvider, str], tmp_path: Path
) -> None:
    fed, servicer, agreement_id = malicious
    schema = pa.schema({"abcd": pa.string()})
    raw = schema.serialize().to_pybytes()
    misnamed = raw.replace(b"abcd", b"\xff\xfe\xfd\xfc")
    message = pa.record_batch([pa.array(["x"])], schema=schema).serialize().to_pybytes()
    servicer.script = lambda hpke: servicer.forged(hpke, misnamed, [(message, 1)])
    before = len(share_failures(fed))
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    result = fetch(fed, agreement_id, out_dir / "x.parquet")
    assert result.returncode == 7, result.stderr
    assert "header schema has a field name that is not UTF-8" in result.stderr
    assert visible(out_dir) == []
    failures = share_failures(fed)
    assert len(failures) == before + 1
    assert "not UTF-8" in failures[-1]["detail"]["reason"]


def test_columns_the_agreement_does_not_share_are_refused_before_anything_is_written(
    malicious: tuple[LocalFederation, MaliciousProvider, str], tmp_path: Path
) -> None:
    """The agreement shares only 'district'; the provider sends 'income' as well."""
    fed, servicer, agreement_id = malicious
    table = pa.table({"district": ["d1", "d2"], "income": pa.array([120000, 98000], pa.int64())})
    message = table.to_batches()[0].serialize().to_pybytes()
    schema = table.schema.serialize().to_pybytes()
    servicer.script = lambda hpke: servicer.forged(hpke, schema, [(message, 2)])
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    result = fetch(fed, agreement_id, out_dir / "x.parquet")
    assert result.returncode == 7, result.stderr
    told = f"the share holds columns agreement {agreement_id} does not share: income"
    assert told in result.stderr
    assert visible(out_dir) == []
    assert told in share_failures(fed)[-1]["detail"]["reason"]
    events = {e["event"] for e in ledger_events(fed.homes["statistics"])}
    assert "share.received" not in events


def test_a_share_completing_after_its_agreement_expired_is_not_kept(
    federation_factory: Any, tmp_path: Path
) -> None:
    """The provider ignores the agreement's end and finishes the share after it:
    the consumer checks the agreement again before it keeps anything."""
    fed: LocalFederation = federation_factory(DEPARTMENTS, start=False)
    server, servicer, agreement_id, valid_until = serve_malicious(fed, tmp_path, 6)
    try:

        def after_the_end(index: int) -> None:
            if index == 1:
                time.sleep(max(0.0, valid_until - time.time()) + 1)

        servicer.before_chunk = after_the_end
        out_dir = tmp_path / "recv"
        out_dir.mkdir()
        result = fetch(fed, agreement_id, out_dir / "x.parquet")
        assert time.time() > valid_until
        assert result.returncode == 6, result.stderr
        assert f"agreement {agreement_id} expired at" in result.stderr
        assert visible(out_dir) == []
        assert "expired" in share_failures(fed)[-1]["detail"]["reason"]
        events = {e["event"] for e in ledger_events(fed.homes["statistics"])}
        assert "share.received" not in events
    finally:
        server.stop(0)


def test_a_revocation_at_the_consumer_stops_a_share_at_its_next_chunk(
    federation_factory: Any, tmp_path: Path
) -> None:
    """The consumer's copy is revoked mid-share (its operator, or the provider's notice);
    the provider streams on, then stalls. The consumer stops at the next chunk instead
    of waiting for the rest."""
    fed: LocalFederation = federation_factory(DEPARTMENTS, start=False)
    server, servicer, agreement_id, _ = serve_malicious(fed, tmp_path, 3600)
    try:

        def revoke_then_stall(index: int) -> None:
            if index == 1:
                admin(fed, "statistics", "agreement.revoke", id=agreement_id, notify=False)
            elif index == 3:
                time.sleep(60)  # the rest of the share would come only after this

        servicer.before_chunk = revoke_then_stall
        out_dir = tmp_path / "recv"
        out_dir.mkdir()
        started = time.monotonic()
        result = fetch(fed, agreement_id, out_dir / "x.parquet")
        assert time.monotonic() - started < 45, "the consumer waited for the stalled provider"
        assert result.returncode == 6, result.stderr
        assert f"agreement {agreement_id} was revoked" in result.stderr
        assert visible(out_dir) == []
        assert "revoked" in share_failures(fed)[-1]["detail"]["reason"]
    finally:
        server.stop(0)


# --- crashes ----------------------------------------------------------------


def _big_agreement(fed: LocalFederation, tmp: Path, rows: int = 200_000) -> str:
    big = tmp / "crash.parquet"
    names = pc.binary_join_element_wise(
        "district-", pc.cast(pa.array(range(rows)), pa.string()), ""
    )
    pq.write_table(pa.table({"district": names}), big)
    admin(fed, "health", "dataset.add", name="crash", path=str(big))
    agreement_id, _ = agreement_file(
        fed, tmp, dataset="crash", columns={"district": {"treatment": "plain"}}
    )
    return agreement_id


def _slow_fetch(
    fed: LocalFederation, agreement_id: str, out: Path, rate: int = 300_000
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "share", "fetch", "--json",
         "--home", str(fed.homes["statistics"]), "--from", "health",
         "--agreement", agreement_id, "--out", str(out), "--limit-rate", str(rate),
         "--compression", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_consumer_killed_mid_share_leaves_no_output(pair: LocalFederation, tmp_path: Path) -> None:
    agreement_id = _big_agreement(pair, tmp_path)
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    out = out_dir / "crash.parquet"
    fetching = _slow_fetch(pair, agreement_id, out)
    time.sleep(1.5)
    pair.stop("statistics", sig=signal.SIGKILL)
    fetching.communicate(timeout=60)
    assert fetching.returncode != 0
    assert [n for n in visible(out_dir) if not n.startswith(".")] == []
    start(pair, "statistics")
    result = fetch(pair, agreement_id, out, "--json")
    assert result.returncode == 0, result.stderr
    # The crashed writer's temporary file is gone; only the complete output remains.
    assert visible(out_dir) == ["crash.parquet"]


def test_a_node_stops_cleanly_on_sigterm_during_an_operator_command(
    pair: LocalFederation, tmp_path: Path
) -> None:
    """SIGTERM while the CLI waits on a long share: the node exits by itself, code 0.

    The share would take about a minute at this rate; the node must not wait for it.
    """
    agreement_id = _big_agreement(pair, tmp_path)
    out = tmp_path / "recv.parquet"
    fetching = _slow_fetch(pair, agreement_id, out, rate=50_000)
    time.sleep(1.5)
    started = time.monotonic()
    assert pair.stop("statistics", sig=signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - started < 20
    fetching.communicate(timeout=60)
    assert fetching.returncode != 0 and not out.exists()


def test_a_second_serve_on_a_running_home_says_so(pair: LocalFederation) -> None:
    again = fednode("serve", "--home", pair.homes["health"], timeout=60)
    assert again.returncode != 0
    assert "a node is already running in" in again.stderr
    assert "cannot listen" not in again.stderr
    assert admin(pair, "health", "dataset.list")["datasets"]  # the first one still serves


def test_provider_killed_mid_share_leaves_no_output(pair: LocalFederation, tmp_path: Path) -> None:
    # Many chunks (~75 MB), so the provider cannot have sent the whole share into the
    # transport's buffers before it is killed, however wide the flow-control window.
    agreement_id = _big_agreement(pair, tmp_path, rows=4_000_000)
    out_dir = tmp_path / "recv"
    out_dir.mkdir()
    fetching = _slow_fetch(pair, agreement_id, out_dir / "crash.parquet")
    time.sleep(1.5)
    pair.stop("health", sig=signal.SIGKILL)
    _, stderr = fetching.communicate(timeout=120)
    assert fetching.returncode == 5, stderr
    assert "share from health failed" in stderr
    assert visible(out_dir) == []
    failures = [
        e for e in ledger_events(pair.homes["statistics"]) if e.get("event") == "share.failed"
    ]
    assert len(failures) == 1
