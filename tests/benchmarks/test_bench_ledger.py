"""Ledger measurements: durable appends with group commit, offline verification, one proof check.

Targets (docs/DESIGN "Performance targets"): >= 10,000 durable appends/s,
>= 200,000 entries/s verified offline, < 100 us per proof check. These print
medians and ratios to the target; they never fail on time.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import pytest

from ledger.bundle import export_bundle
from ledger.merkle import verify_inclusion
from ledger.store import LedgerStore
from ledger.verify import verify_bundle
from tests.unit.ledger.helpers import Federation

pytestmark = pytest.mark.benchmark

_FIELDS = {
    "event": "share.sent",
    "actor": "analyst",
    "peer": "beta",
    "agreement": "agr-2026-001",
    "dataset": "people",
    "columns": ["age", "region"],
    "digest": "sha256:" + "ab" * 32,
    "detail": {"share_id": "cd" * 16, "rows": 1000, "chunks": 2},
}


def _load() -> str:
    # Other processes share the machine: the load average says how much the
    # wall-clock figures next to it are worth.
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


def _append_rate(path: Path, threads: int, per_thread: int) -> tuple[float, float]:
    """Return (appends per wall second, appends per CPU second of the whole process)."""
    store = LedgerStore(path, "alpha")
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            store.append(_FIELDS)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    store.close()
    total = threads * per_thread
    return total / elapsed, total / cpu


def test_bench_durable_appends(tmp_path: Path) -> None:
    # The CPU-second rate is printed too: on a shared machine the wall-clock
    # rate mostly measures the neighbours.
    for threads in (1, 16, 64, 128):
        per_thread = max(40, 12_800 // threads)
        runs = [
            _append_rate(tmp_path / f"l{threads}-{run}.db", threads, per_thread) for run in range(3)
        ]
        median = statistics.median(r[0] for r in runs)
        per_cpu = statistics.median(r[1] for r in runs)
        print(
            f"\nledger durable appends, {threads:3d} threads: median {median:,.0f}/s "
            f"(target 10,000/s, ratio {median / 10_000:.2f}); {per_cpu:,.0f} per CPU-second; "
            f"{_load()}"
        )


def test_bench_offline_verification(tmp_path: Path) -> None:
    fed = Federation(tmp_path / "fed")
    store = fed.store("alpha")
    total = 200_000
    threads = 64
    barrier = threading.Barrier(threads)

    bulk = {**_FIELDS, "event": "access.read"}

    def work() -> None:
        barrier.wait()
        for _ in range(total // threads):
            store.append(bulk)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    fed.publish("alpha")
    out = tmp_path / "bundle"
    export_bundle(store, fed.directory_json, out, origin=fed.origin("alpha"), ca_pem=fed.ca_pem)
    fed.close()
    import ledger.verify as verify_module

    for label, parallel_min in (("serial", 10**12), ("worker processes", 1)):
        verify_module._PARALLEL_MIN = parallel_min
        rates, cpu_rates = [], []
        for _ in range(3):
            cpu = time.process_time()
            report = verify_bundle([out])
            cpu = time.process_time() - cpu
            rates.append(report.entries / report.seconds)
            cpu_rates.append(report.entries / cpu)
        median = statistics.median(rates)
        extra = f"; {statistics.median(cpu_rates):,.0f} per CPU-second" if label == "serial" else ""
        print(
            f"\nledger offline verification ({label}) of {report.entries:,} entries: "
            f"median {median:,.0f} entries/s (target 200,000/s, ratio {median / 200_000:.2f})"
            f"{extra}; {_load()}"
        )
    verify_module._PARALLEL_MIN = 50_000


def test_bench_inclusion_proof_check(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l.db", "alpha")
    for _ in range(2000):
        store.append({"event": "x.y"})
    size = store.size
    root = store.root()
    seq = 1234
    leaf = next(leaf for _, _, leaf in store.iter_entries(seq, seq + 1))
    proof = store.inclusion_proof(seq, size)
    store.close()
    samples = []
    for _ in range(7):
        n = 5000
        began = time.perf_counter()
        for _ in range(n):
            verify_inclusion(leaf, seq, size, proof, root)
        samples.append((time.perf_counter() - began) / n * 1e6)
    median = statistics.median(samples)
    print(
        f"\nledger inclusion proof check (size {size}, {len(proof)} hashes): "
        f"median {median:.1f} us "
        f"(target < 100 us, ratio {median / 100:.2f})"
    )
