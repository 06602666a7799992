"""A small federation in memory for ledger tests: keys, a signed directory, stores, witnesses.

Everything is real (SQLite files, Ed25519 and ECDSA signatures); only the
network is missing, because the ledger library does not use one.
"""

from __future__ import annotations

import base64
import datetime
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from ledger.canonical import dumps
from ledger.checkpoint import add_signatures, log_name, sign_checkpoint
from ledger.entry import GENESIS_PREV, parse_entry
from ledger.errors import LedgerError
from ledger.merkle import consistency_proof, hash_leaf, list_node_hash, root_from_leaves
from ledger.store import LedgerStore, StoredCheckpoint
from ledger.witness import Witness, WitnessState

FEDERATION = "testfed"


def _seed_key(name: str) -> Ed25519PrivateKey:
    # Fixed keys keep generated data reproducible between runs.
    return Ed25519PrivateKey.from_private_bytes(name.encode().ljust(32, b"\0")[:32])


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test federation CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def make_directory(
    ca_key: ec.EllipticCurvePrivateKey,
    keys: dict[str, Ed25519PublicKey],
    witnesses: set[str],
    threshold: int,
    serial: int = 1,
) -> bytes:
    body = {
        "v": 1,
        "type": "fednode.directory",
        "federation": FEDERATION,
        "serial": serial,
        "issued_at": 1_700_000_000,
        "expires_at": 1_900_000_000,
        "witness_threshold": threshold,
        "departments": [
            {
                "id": dept,
                "display_name": dept.upper(),
                "endpoint": "127.0.0.1:1",
                "tls_fingerprint": "sha256:" + "0" * 64,
                "ed25519_public": base64.b64encode(key.public_bytes_raw()).decode(),
                "hpke_public": base64.b64encode(b"\0" * 1216).decode(),
                "witness": dept in witnesses,
            }
            for dept, key in sorted(keys.items())
        ],
        "revoked": [],
    }
    signature = ca_key.sign(dumps(body), ec.ECDSA(hashes.SHA256()))
    return dumps({"directory": body, "signature": base64.b64encode(signature).decode()})


@dataclass
class Federation:
    root: Path
    departments: tuple[str, ...] = ("alpha", "beta", "gamma")
    threshold: int = 2
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    stores: dict[str, LedgerStore] = field(default_factory=dict)
    witnesses: dict[str, Witness] = field(default_factory=dict)
    directory_json: bytes = b""
    ca_pem: bytes = b""
    #: Added to every store's clock, so a test can let time pass between entries.
    skew_ms: int = 0

    def __post_init__(self) -> None:
        self.keys = {d: _seed_key(d) for d in self.departments}
        self.ca_key, self.ca_pem = make_ca()
        self.directory_json = make_directory(
            self.ca_key,
            {d: k.public_key() for d, k in self.keys.items()},
            set(self.departments),
            self.threshold,
        )
        public = {log_name(FEDERATION, d): k.public_key() for d, k in self.keys.items()}
        for dept in self.departments:
            self.witnesses[dept] = Witness(
                WitnessState(self.root / dept / "witness.db"),
                log_name(FEDERATION, dept),
                self.keys[dept],
                public.get,
            )

    def origin(self, dept: str) -> str:
        return log_name(FEDERATION, dept)

    def store(self, dept: str) -> LedgerStore:
        if dept not in self.stores:
            self.stores[dept] = LedgerStore(
                self.root / dept / "ledger.db",
                dept,
                clock=lambda: time.time_ns() // 1_000_000 + self.skew_ms,
            )
        return self.stores[dept]

    def publish(self, dept: str) -> StoredCheckpoint:
        """Sign a checkpoint of ``dept`` and gather every other witness's cosignature."""
        store = self.store(dept)
        cp = store.sign_checkpoint(self.origin(dept), self.keys[dept])
        lines = []
        for other, witness in self.witnesses.items():
            if other == dept:
                continue
            held = witness.state.get(self.origin(dept))
            old = held[0] if held else 0
            proof = store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
            lines.append(witness.add_checkpoint(old, proof, cp.note))
        return store.add_cosignatures(cp.size, lines)

    def share(
        self,
        sender: str,
        recipient: str,
        rows: int = 10,
        *,
        receiver_records: bool = True,
        sender_records: bool = True,
        receipt_signer: str | None = None,
        receiver_digest: str | None = None,
        receipt_time: int | None = None,
    ) -> str:
        """Record one share on both sides, with a receipt signed by the recipient."""
        share_id = os.urandom(16).hex()
        digest = "sha256:" + os.urandom(32).hex()
        receipt: dict[str, Any] = {
            "v": 1,
            "type": "fednode.receipt",
            "share_id": share_id,
            "digest": digest,
            "rows": rows,
            "chunks": 1,
            "sender": sender,
            "recipient": recipient,
            "agreement": "agr-1",
            "time": int(time.time()) if receipt_time is None else receipt_time,
        }
        signed = {
            "receipt": receipt,
            "signature": base64.b64encode(
                self.keys[receipt_signer or recipient].sign(dumps(receipt))
            ).decode(),
        }
        common = {
            "agreement": "agr-1",
            "dataset": "people",
            "columns": ["age"],
            "purpose": "research",
            "digest": digest,
        }
        if receiver_records:
            self.store(recipient).append(
                {
                    "event": "share.received",
                    "peer": sender,
                    **common,
                    "digest": receiver_digest or digest,
                    "detail": {"share_id": share_id, "rows": rows, "chunks": 1},
                }
            )
        if sender_records:
            self.store(sender).append(
                {
                    "event": "share.sent",
                    "peer": recipient,
                    **common,
                    "detail": {"share_id": share_id, "rows": rows, "chunks": 1, "receipt": signed},
                }
            )
        return share_id

    def bundle_of_lines(
        self, dept: str, lines: list[bytes], out: Path, sizes: list[int] | None = None
    ) -> Path:
        """Write a bundle of ``lines``, whatever they hold, as ``dept`` would publish it:
        each checkpoint signed by its key and cosigned by every other witness."""
        leaves = [hash_leaf(line) for line in lines]
        sizes = sizes or [len(lines)]
        origin = self.origin(dept)
        (out / "checkpoints").mkdir(parents=True)
        proofs: list[dict[str, Any]] = []
        for before, size in zip([0, *sizes], sizes, strict=False):
            note = sign_checkpoint(origin, size, root_from_leaves(leaves[:size]), self.keys[dept])
            lines_ = []
            for other, witness in self.witnesses.items():
                if other == dept:
                    continue
                held = witness.state.get(origin)
                old = held[0] if held else 0
                proof = (
                    consistency_proof(old, size, list_node_hash(leaves)) if 0 < old < size else []
                )
                lines_.append(witness.add_checkpoint(old, proof, note))
            (out / "checkpoints" / f"{size:012d}.note").write_bytes(add_signatures(note, lines_))
            if before:
                proof = consistency_proof(before, size, list_node_hash(leaves))
                proofs.append(
                    {
                        "from": before,
                        "to": size,
                        "proof": [base64.b64encode(h).decode() for h in proof],
                    }
                )
        (out / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        (out / "proofs.json").write_bytes(dumps({"v": 1, "consistency": proofs}) + b"\n")
        (out / "directory.json").write_bytes(self.directory_json)
        (out / "ca.pem").write_bytes(self.ca_pem)
        manifest = {
            "v": 1,
            "type": "fednode.ledger-bundle",
            "origin": origin,
            "node": dept,
            "federation": FEDERATION,
            "size": len(lines),
            "checkpoints": sizes,
        }
        (out / "manifest.json").write_bytes(dumps(manifest) + b"\n")
        return out

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        for witness in self.witnesses.values():
            witness.state.close()


def fill(store: LedgerStore, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        store.append(
            {
                "event": "access.read" if i % 3 else "rpc.call",
                "actor": "operator",
                "peer": "beta",
                "outcome": "ok" if i % 7 else "denied",
                "detail": {"i": i, "reason": "test"},
            }
        )


def entry_fields(seq: int, prev: str, node: str = "alpha", **changes: Any) -> dict[str, Any]:
    """The members of a plain v1 entry, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "v": 1,
        "seq": seq,
        "time": 1_700_000_000_000 + seq,
        "node": node,
        "event": "access.read",
        "actor": "operator",
        "peer": "beta",
        "agreement": None,
        "dataset": None,
        "columns": None,
        "purpose": None,
        "digest": None,
        "outcome": "ok",
        "detail": {},
        "prev": prev,
        "sensitive": [],
    }
    fields.update(changes)
    return fields


def chain(entries: list[dict[str, Any]]) -> list[bytes]:
    """Render ``entries`` in order, each linked to the one before."""
    lines: list[bytes] = []
    prev = GENESIS_PREV
    for fields in entries:
        raw = dumps({**fields, "prev": prev})
        lines.append(raw)
        prev = hash_leaf(raw).hex()
    return lines


def strict_chain_ok(
    lines: list[bytes], first_seq: int = 0, first_prev: str = GENESIS_PREV, node: str = "alpha"
) -> bool:
    """The reference the verifier's fast paths are held to: every line parses
    strictly, seq, node and prev follow on from ``first_seq`` and ``first_prev``,
    and times never decrease."""
    prev = first_prev
    last_time = 0
    for i, raw in enumerate(lines):
        try:
            entry = parse_entry(raw)
        except LedgerError:
            return False
        if entry.seq != first_seq + i or entry.fields["node"] != node or entry.prev != prev:
            return False
        if entry.fields["time"] < last_time:
            return False
        prev, last_time = entry.leaf.hex(), entry.fields["time"]
    return True
