"""kill -9 during heavy appends: every acknowledged append survives, fsck and verify pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ledger.bundle import export_bundle
from ledger.verify import verify_bundle
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
