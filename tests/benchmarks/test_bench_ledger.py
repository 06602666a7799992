"""Ledger measurements: durable appends with group commit, offline verification, one proof check.

Targets (docs/DESIGN "Performance targets"): >= 10,000 durable appends/s,
>= 200,000 entries/s verified offline, < 100 us per proof check. These print
medians and ratios to the target; they never fail on time.
"""

from __future__ import annotations

import hashlib
import os
import resource
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


def _bundle(tmp_path: Path, events: list[dict[str, object]]) -> Path:
    """Append ``events`` from many threads, publish a checkpoint and export a bundle."""
    fed = Federation(tmp_path / "fed")
    store = fed.store("alpha")
    threads = 64
    barrier = threading.Barrier(threads)

    def work(part: list[dict[str, object]]) -> None:
        barrier.wait()
        for fields in part:
            store.append(fields)

    workers = [threading.Thread(target=work, args=(events[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    fed.publish("alpha")
    out = tmp_path / "bundle"
    export_bundle(store, fed.directory_json, out, origin=fed.origin("alpha"), ca_pem=fed.ca_pem)
    fed.close()
    return out


def _verify_rates(bundle: Path, label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Print median entries/s serially and in the default configuration, with CPU rates."""
    import ledger.verify as verify_module

    default = verify_module._PARALLEL_MIN
    workers = min(os.cpu_count() or 1, verify_module._MAX_WORKERS)
    for mode, parallel_min in (("serial", 10**12), (f"default, {workers} workers", default)):
        monkeypatch.setattr(verify_module, "_PARALLEL_MIN", parallel_min)
        rates, cpu_rates = [], []
        for _ in range(5):
            cpu = _cpu_seconds()
            report = verify_bundle([bundle])
            cpu = _cpu_seconds() - cpu
            rates.append(report.entries / report.seconds)
            cpu_rates.append(report.entries / cpu)
        median = statistics.median(rates)
        print(
            f"\nledger offline verification, {label} ({mode}) of {report.entries:,} entries: "
            f"median {median:,.0f} entries/s (target 200,000/s, ratio {median / 200_000:.2f}); "
            f"{statistics.median(cpu_rates):,.0f} per CPU-second; {_load()}"
        )


def _cpu_seconds() -> float:
    # Worker processes are counted once they have been joined, which
    # verify_bundle does before it returns.
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def test_bench_offline_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk: dict[str, object] = {**_FIELDS, "event": "access.read"}
    bundle = _bundle(tmp_path, [bulk] * 200_000)
    _verify_rates(bundle, "one recurring entry shape", monkeypatch)


def test_bench_offline_verification_varied_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A log as the node writes it: RPC records of a few dozen shapes (method x
    # peer x outcome) between share records that are each unique (share id,
    # digest), one in ten. (Records of the share itself need signed receipts;
    # these are reads of a dataset with the same unique fields.)
    methods = [f"/fednode.v1.Service{m}/Call{c}" for m in range(4) for c in range(3)]
    peers = ["beta", "gamma", "delta"]
    events: list[dict[str, object]] = []
    for i in range(200_000):
        if i % 10 == 9:
            share = hashlib.sha256(b"%d" % i).hexdigest()
            events.append(
                {
                    **_FIELDS,
                    "event": "access.read",
                    "digest": "sha256:" + share,
                    "detail": {"share_id": share[:32], "rows": i, "chunks": 1 + i % 7},
                }
            )
            continue
        method, peer = methods[i % len(methods)], peers[i % len(peers)]
        finished = i % 2
        detail: dict[str, object] = {"method": method, "surface": "network"}
        if finished:
            detail["code"] = "OK" if i % 13 else "PERMISSION_DENIED"
        events.append(
            {
                "event": "rpc.finished" if finished else "rpc.started",
                "peer": peer,
                "outcome": ("ok" if i % 13 else "denied") if finished else "ok",
                "detail": detail,
            }
        )
    bundle = _bundle(tmp_path, events)
    _verify_rates(bundle, "varied log, 1 in 10 entries unique", monkeypatch)


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
