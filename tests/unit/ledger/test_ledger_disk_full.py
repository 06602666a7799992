"""A ledger that cannot be written: every waiter is told, nothing acknowledged is lost.

A full disk is simulated in a child process by a file size limit
(``RLIMIT_FSIZE``) just above the write-ahead log's current size: every
commit that needs a new log frame fails as a full disk would. The child
reports what each call returned, then lifts the limit and shows the store
carries on, and the parent reopens the file and checks it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ledger.store import LedgerStore

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys, threading
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from ledger.checkpoint import cosign
    from ledger.store import LedgerStore

    # Past the limit a write fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = Path(sys.argv[1])
    origin = "fednode/testfed/alpha"
    key = Ed25519PrivateKey.generate()
    store = LedgerStore(path, "alpha")
    for i in range(10):
        store.append({"event": "x.y", "actor": f"person {i}"}, ["actor"])
    first = store.sign_checkpoint(origin, key)
    for i in range(5):
        store.append({"event": "x.y", "detail": {"i": i}})
    limit = Path(f"{path}-wal").stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    report = {"acked": [], "refused": [], "jobs": {}, "after": {}}
    lock = threading.Lock()

    def work(n):
        for i in range(25):
            try:
                detail = {"n": n, "i": i, "pad": "p" * 500}
                seq, _ = store.append({"event": "x.y", "detail": detail})
            except Exception as e:
                with lock:
                    report["refused"].append(f"{type(e).__name__}: {e}")
            else:
                with lock:
                    report["acked"].append(seq)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    line = cosign(first.note.split(b"\\n\\n")[0] + b"\\n", "fednode/testfed/beta", key, 1)
    jobs = {
        "sign": lambda: store.sign_checkpoint(origin, key),
        "cosign": lambda: store.add_cosignatures(first.size, [line]),
        "erase": lambda: store.erase(3, "actor"),
        "erase_recorded": lambda: store.erase(
            4, "actor", record={"event": "ledger.erased", "detail": {"seq": 4}}
        ),
    }
    for name, job in jobs.items():
        try:
            job()
            report["jobs"][name] = "ok"
        except Exception as e:
            report["jobs"][name] = f"{type(e).__name__}: {e}"

    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    report["after"]["append"] = store.append({"event": "x.y"})[0]
    for name, job in jobs.items():
        job()
        report["after"][name] = "ok"
    report["size"] = store.size
    store.close()
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    path = tmp_path_factory.mktemp("limited") / "ledger.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report, path


def test_every_append_is_acknowledged_or_refused_and_none_is_lost(
    outcome: tuple[dict[str, Any], Path],
) -> None:
    report, path = outcome
    assert len(report["acked"]) + len(report["refused"]) == 100
    assert report["refused"], "the limit should have refused appends"
    assert all("StorageError" in r and "not committed" in r for r in report["refused"])
    with LedgerStore(path, "alpha") as store:
        assert store.fsck().size == store.size == report["size"]
        # Every acknowledged append is there, with the body its caller sent.
        assert all(b'"pad"' in store.entry(seq) for seq in report["acked"])


@pytest.mark.parametrize("job", ["sign", "cosign", "erase", "erase_recorded"])
def test_a_failed_write_job_reports_the_disk_error(
    outcome: tuple[dict[str, Any], Path], job: str
) -> None:
    """The error names the cause, not a failed clean-up; the store carries on afterwards."""
    report, _ = outcome
    message = report["jobs"][job]
    assert message.startswith("StorageError"), message
    assert "disk I/O error" in message or "full" in message, message
    assert "no transaction is active" not in message
    assert report["after"][job] == "ok"


def test_the_store_carries_on_once_space_returns(outcome: tuple[dict[str, Any], Path]) -> None:
    report, path = outcome
    # The erasure whose record failed with it took no seq: the next append has the next one.
    assert report["after"]["append"] == 15 + len(report["acked"])
    with LedgerStore(path, "alpha") as store:
        assert store.fsck().checkpoints == 2
        assert (3, "actor") not in store.stored_values()
        assert (4, "actor") not in store.stored_values()
        recorded = [
            seq for seq, body, _ in store.iter_entries() if b'"event":"ledger.erased"' in body
        ]
        assert len(recorded) == 1  # once, by the run after space returned
