"""kill -9 during heavy appends, checkpoint signing, witnessing and erasure.

After each kill the files open, fsck and verify pass, and nothing the killed
process acknowledged is lost: an append, a checkpoint, a witness's view, an
erasure.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bundle import export_bundle
from ledger.canonical import loads
from ledger.merkle import verify_consistency
from ledger.store import LedgerStore
from ledger.verify import verify_bundle
from ledger.witness import ForkError, RollbackError, Witness, WitnessState
from tests.unit.ledger.helpers import Federation

ROOT = Path(__file__).resolve().parents[3]

WRITER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from ledger.store import LedgerStore

    store = LedgerStore(Path(sys.argv[1]), "alpha")
    lock = threading.Lock()

    def work(n):
        i = 0
        while True:
            seq, _ = store.append({"event": "load.test", "actor": f"t{n}", "detail": {"i": i}})
            with lock:
                sys.stdout.write(f"{seq}\\n")
                sys.stdout.flush()
            i += 1

    for n in range(8):
        threading.Thread(target=work, args=(n,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_kill_9_during_appends(federation: Federation, tmp_path: Path) -> None:
    db = tmp_path / "alpha" / "ledger.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acknowledged: list[int] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 3000:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # Lines already in the pipe were acknowledged before the kill, too.
    acknowledged.extend(int(line) for line in proc.stdout.read().split())
    assert len(acknowledged) >= 3000

    store = federation.store("alpha")
    report = store.fsck()
    assert report.size >= max(acknowledged) + 1
    assert set(acknowledged) <= set(range(report.size))
    federation.publish("alpha")
    out = tmp_path / "bundle"
    export_bundle(store, federation.directory_json, out, origin=federation.origin("alpha"))
    result = verify_bundle([out], ca_pem=federation.ca_pem)
    assert result.bundles[0].entries == report.size
    assert result.bundles[0].tail == 0


def _acknowledged(script: str, args: list[str], count: int) -> list[str]:
    """Run ``script``, kill -9 it once it has acknowledged ``count`` steps, return them all.

    Each acknowledgement is one line the child writes only after the call it
    reports has returned; lines already in the pipe when it dies count too.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        for raw in proc.stdout:
            lines.append(raw.decode().strip())
            if len(lines) >= count:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    lines.extend(raw.decode().strip() for raw in proc.stdout.read().splitlines())
    assert len(lines) >= count, proc.stderr.read().decode()[-2000:]
    return lines


#: A fixed log key, so the parent can check what the child signed.
LOG_KEY = "Ed25519PrivateKey.from_private_bytes(b'alpha'.ljust(32, b'\\0'))"

SIGNER = textwrap.dedent(
    f"""
    import sys, threading
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from ledger.store import LedgerStore

    store = LedgerStore(Path(sys.argv[1]), "alpha")
    key = {LOG_KEY}

    def work(n):
        i = 0
        while True:
            store.append({{"event": "load.test", "actor": f"t{{n}}", "detail": {{"i": i}}}})
            i += 1

    for n in range(4):
        threading.Thread(target=work, args=(n,), daemon=True).start()
    while True:
        cp = store.sign_checkpoint("fednode/testfed/alpha", key)
        sys.stdout.write(f"{{cp.size}} {{cp.root.hex()}}\\n")
        sys.stdout.flush()
    """
)


def _log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b"alpha".ljust(32, b"\0"))


@pytest.mark.slow
def test_kill_9_while_signing_checkpoints(tmp_path: Path) -> None:
    """Every acknowledged checkpoint survives with its root, none is half there, and the
    store signs on from where it stopped."""
    db = tmp_path / "ledger.sqlite"
    acked = [line.split() for line in _acknowledged(SIGNER, [str(db)], 40)]
    origin = "fednode/testfed/alpha"
    key = _log_key()
    with LedgerStore(db, "alpha") as store:
        report = store.fsck(key.public_key(), origin)
        stored = {cp.size: cp for cp in store.checkpoints()}
        for size, root in acked:
            assert stored[int(size)].root.hex() == root
        assert report.checkpoints == len(stored)
        # Consistency between any two stored checkpoints, from the store's own proofs.
        sizes = sorted(s for s in stored if s > 0)
        for old, new in itertools.combinations(sizes, 2):
            proof = store.consistency_proof(old, new)
            verify_consistency(old, new, proof, stored[old].root, stored[new].root)
        store.append({"event": "after.restart"})
        again = store.sign_checkpoint(origin, key)
        assert again.size == store.size > max(stored)


WITNESS = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from ledger.store import LedgerStore
    from ledger.witness import Witness, WitnessState

    origin = "fednode/testfed/alpha"
    key = {LOG_KEY}
    log = LedgerStore(Path(sys.argv[1]), "alpha")
    witness = Witness(
        WitnessState(Path(sys.argv[2])),
        "fednode/testfed/beta",
        Ed25519PrivateKey.generate(),
        {{origin: key.public_key()}}.get,
    )
    while True:
        for i in range(3):
            log.append({{"event": "load.test", "detail": {{"i": i}}}})
        cp = log.sign_checkpoint(origin, key)
        held = witness.state.get(origin)
        old = held[0] if held else 0
        proof = log.consistency_proof(old, cp.size) if 0 < old < cp.size else []
        witness.add_checkpoint(old, proof, cp.note)
        sys.stdout.write(f"{{cp.size}}\\n")
        sys.stdout.flush()
    """
)


@pytest.mark.slow
def test_kill_9_while_witnessing(tmp_path: Path) -> None:
    """A view the witness answered for survives the kill: it then refuses a fork or a
    rollback of what it cosigned, and goes on cosigning the honest log."""
    log_db, state_db = tmp_path / "alpha.sqlite", tmp_path / "beta-witness.sqlite"
    acked = [int(line) for line in _acknowledged(WITNESS, [str(log_db), str(state_db)], 40)]
    origin = "fednode/testfed/alpha"
    key = _log_key()
    state = WitnessState(state_db)
    witness = Witness(
        state, "fednode/testfed/beta", Ed25519PrivateKey.generate(), {origin: key.public_key()}.get
    )
    held = state.get(origin)
    assert held is not None
    held_size, held_root = held
    # The view may be one step past the last line the parent read, never behind it.
    assert held_size >= max(acked)
    with LedgerStore(log_db, "alpha") as log:
        assert log.root(held_size) == held_root
        fork = LedgerStore(tmp_path / "fork.sqlite", "alpha")
        for i in range(held_size):
            fork.append({"event": "forged", "detail": {"i": i}})
        forked = fork.sign_checkpoint(origin, key)
        with pytest.raises(ForkError, match="second root"):
            witness.add_checkpoint(held_size, [], forked.note)
        fork.append({"event": "forged"})
        longer = fork.sign_checkpoint(origin, key)
        with pytest.raises(ForkError, match="not consistent"):
            witness.add_checkpoint(
                held_size, fork.consistency_proof(held_size, longer.size), longer.note
            )
        fork.close()
        shorter = LedgerStore(tmp_path / "shorter.sqlite", "alpha")
        for i in range(acked[0]):
            shorter.append({"event": "forged", "detail": {"i": i}})
        with pytest.raises(RollbackError):
            witness.add_checkpoint(held_size, [], shorter.sign_checkpoint(origin, key).note)
        shorter.close()
        log.append({"event": "after.restart"})
        grown = log.sign_checkpoint(origin, key)
        witness.add_checkpoint(held_size, log.consistency_proof(held_size, grown.size), grown.note)
    assert state.get(origin) == (grown.size, grown.root)
    state.close()


ERASER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ledger.store import LedgerStore

    store = LedgerStore(Path(sys.argv[1]), "alpha")
    recorded = sys.argv[2] == "recorded"
    for seq in range(store.size):
        record = {"event": "ledger.erased", "detail": {"seq": seq}} if recorded else None
        erasure = store.erase(seq, "actor", record=record)
        if erasure.wal_truncated:
            sys.stdout.write(f"{seq}\\n")
            sys.stdout.flush()
    sys.stdout.write("done\\n")
    sys.stdout.flush()
    import threading
    threading.Event().wait()
    """
)


ERASABLE = 120


def _person(seq: int) -> str:
    return f"person-{seq:05d}-of-the-test"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "recorded"])
def test_kill_9_while_erasing(tmp_path: Path, mode: str) -> None:
    """Erasures cut short leave a ledger whose chain, tree and checkpoint still verify;
    every acknowledged erasure is gone from the file's bytes; running again finishes.
    Recorded erasures are recorded exactly when the value is gone."""
    db = tmp_path / "ledger.sqlite"
    origin = "fednode/testfed/alpha"
    key = _log_key()
    with LedgerStore(db, "alpha") as store:
        for seq in range(ERASABLE):
            store.append({"event": "access.read", "actor": _person(seq)}, ["actor"])
        signed = store.sign_checkpoint(origin, key)
    acked = [int(line) for line in _acknowledged(ERASER, [str(db), mode], 30) if line != "done"]
    with LedgerStore(db, "alpha") as store:
        report = store.fsck(key.public_key(), origin)
        assert store.root(ERASABLE) == signed.root
        left = {seq for seq, _ in store.stored_values()}
        records = [loads(body) for _, body, _ in store.iter_entries(ERASABLE)]
        if mode == "plain":
            assert report.size == ERASABLE
        else:
            assert {r["detail"]["seq"] for r in records} == set(range(ERASABLE)) - left
            assert len(records) == report.size - ERASABLE
        assert not left & set(acked)
        # The kill may have cut one erasure between its delete and its acknowledgement.
        assert len(left) >= ERASABLE - len(acked) - 1
        assert store.reveal(ERASABLE - 1, "actor") == _person(ERASABLE - 1)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite*") if p.is_file())
    assert _person(ERASABLE - 1).encode() in on_disk  # a value still held is found
    for seq in acked:
        assert _person(seq).encode() not in on_disk
    with LedgerStore(db, "alpha") as store:
        for seq in sorted(left):
            store.erase(seq, "actor", missing_ok=True)
        assert store.stored_values() == []
        store.fsck(key.public_key(), origin)
        assert store.root(ERASABLE) == signed.root
