"""Bundles an auditor holds after a department enrolled again under new keys.

alpha runs under its first key (directory serial ``OLD_SERIAL``) and its
checkpoints are cosigned by beta and gamma, who record what they cosigned.
alpha then enrols again in a fresh home (a new log from seq 0) and directory
serial ``NEW_SERIAL`` names its new key; the witnesses start a new view of the
new log and cosign it. Shared by the re-enrolment tests of the verifier.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bundle import export_bundle
from ledger.checkpoint import log_name
from ledger.store import LedgerStore
from ledger.witness import Witness, WitnessState
from tests.unit.ledger.helpers import FEDERATION, Federation, fill, make_directory

OLD_SERIAL, NEW_SERIAL = 1, 3


@dataclass
class Rekeyed:
    """The bundles an auditor holds after alpha enrolled again."""

    federation: Federation
    old_alpha: Path
    new_alpha: Path
    beta: Path
    gamma: Path
    old_key: Ed25519PrivateKey


def publish_claimed(federation: Federation, dept: str) -> None:
    """Sign a checkpoint of ``dept``; every other witness cosigns it and records
    a ``witness.cosigned`` claim in its own ledger, as its node does."""
    store = federation.store(dept)
    origin = federation.origin(dept)
    cp = store.sign_checkpoint(origin, federation.keys[dept])
    lines = []
    for other, witness in federation.witnesses.items():
        if other == dept:
            continue
        held = witness.state.get(origin)
        old = held[0] if held and held[0] <= cp.size else 0
        proof = store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
        line = witness.add_checkpoint(old, proof, cp.note)
        lines.append(line)
        federation.store(other).append(
            {
                "event": "witness.cosigned",
                "peer": dept,
                "detail": {
                    "origin": origin,
                    "size": cp.size,
                    "root": base64.b64encode(cp.root).decode(),
                    "note": cp.note.decode(),
                    "cosignature": line.encode(),
                },
            }
        )
    store.add_cosignatures(cp.size, lines)


def export(federation: Federation, dept: str, out: Path, *, published_only: bool = True) -> Path:
    # Published only: the claims a department records after its last checkpoint
    # (cosigning the others) would otherwise be an uncovered tail.
    return export_bundle(
        federation.store(dept),
        federation.directory_json,
        out,
        origin=federation.origin(dept),
        ca_pem=federation.ca_pem,
        published_only=published_only,
    ).path


def reenrol(federation: Federation, dept: str, serial: int) -> None:
    """Give ``dept`` a new key, a fresh home (new ledger and witness state) and publish
    directory ``serial`` naming it; every witness now looks keys up in it."""
    federation.store(dept).close()
    federation.witnesses[dept].state.close()
    federation.keys[dept] = Ed25519PrivateKey.generate()
    home = federation.root / f"{dept}-again"
    federation.stores[dept] = LedgerStore(home / "ledger.db", dept)
    federation.directory_json = make_directory(
        federation.ca_key,
        {d: k.public_key() for d, k in federation.keys.items()},
        set(federation.departments),
        federation.threshold,
        serial=serial,
    )
    public = {log_name(FEDERATION, d): k.public_key() for d, k in federation.keys.items()}
    for name, witness in list(federation.witnesses.items()):
        state = WitnessState(home / "witness.db") if name == dept else witness.state
        federation.witnesses[name] = Witness(
            state, federation.origin(name), federation.keys[name], public.get
        )


#: Records shares in the federation; called with the federation and alpha's old key.
Shares = Callable[[Federation, Ed25519PrivateKey], None]


def build_rekeyed(
    tmp_path: Path, before: Shares | None = None, after: Shares | None = None
) -> Rekeyed:
    """alpha's old log (16 entries), its new one (9) and beta's and gamma's, exported;
    ``before`` and ``after`` record shares before and after alpha enrolled again."""
    federation = Federation(tmp_path / "fed", threshold=1)  # directory serial OLD_SERIAL
    fill(federation.store("alpha"), 10)
    if before is not None:
        before(federation, federation.keys["alpha"])
    publish_claimed(federation, "alpha")
    fill(federation.store("alpha"), 6, 10)
    publish_claimed(federation, "alpha")  # size 16
    old_alpha = export(federation, "alpha", tmp_path / "old-alpha")
    old_key = federation.keys["alpha"]

    reenrol(federation, "alpha", NEW_SERIAL)
    fill(federation.store("alpha"), 5)
    if after is not None:
        after(federation, old_key)
    publish_claimed(federation, "alpha")
    fill(federation.store("alpha"), 4, 5)
    publish_claimed(federation, "alpha")  # size 9
    for dept in ("beta", "gamma"):
        fill(federation.store(dept), 3)
        publish_claimed(federation, dept)
    return Rekeyed(
        federation,
        old_alpha,
        export(federation, "alpha", tmp_path / "new-alpha"),
        export(federation, "beta", tmp_path / "beta"),
        export(federation, "gamma", tmp_path / "gamma"),
        old_key,
    )
