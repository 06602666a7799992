"""Encrypted shares against plaintext Flight between two hosts joined by a shaped link.

``test_bench_exchange.py`` runs both sides on loopback, where a byte on the
wire costs only CPU. Departments are joined by real links, so here each side
runs in its own network namespace (``tests/multihost``'s lab: veth pairs
through a bridge), and the provider's egress is shaped with ``tc tbf`` to
``FEDNODE_BENCH_LINK`` (default ``1gbit``, a typical inter-agency link).
Everything else matches the loopback benchmark: the same table, Parquet
file and reading, a real ``fednode serve`` per department over mTLS with
envelope v1 and zstd buffers (the default), against a ``pyarrow.flight``
server in the provider's namespace answering DoGet in plaintext to a client
in the consumer's namespace, which writes the batches to an Arrow IPC file.
Runs are interleaved; medians are reported. Needs root (network namespaces);
skipped otherwise. Nothing here fails on time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.localfed import DepartmentSpec
from tests.benchmarks.test_bench_exchange import FLIGHT_SERVER, load, settle, write_parquet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multihost"))

from labfed import LabFederation, provision_in_lab
from netns import Lab, unavailable_reason

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("FEDNODE_BENCH_ROWS", "3000000"))
RUNS = int(os.environ.get("FEDNODE_BENCH_RUNS", "3"))
LINK = os.environ.get("FEDNODE_BENCH_LINK", "1gbit")
FLIGHT_PORT = 7500

FLIGHT_CLIENT = """
import json, sys, time
import pyarrow as pa
import pyarrow.flight as fl

client = fl.FlightClient(sys.argv[1])
started = time.perf_counter()
reader = client.do_get(fl.Ticket(b""))
nbytes = 0
with pa.ipc.new_file(sys.argv[2], reader.schema) as writer:
    for chunk in reader:
        writer.write_batch(chunk.data)
        nbytes += chunk.data.nbytes
print(json.dumps({"seconds": time.perf_counter() - started, "bytes": nbytes}))
"""


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[LabFederation]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    lab = Lab.create(["health", "statistics"])
    try:
        fed = provision_in_lab(
            lab,
            tmp_path / "fed",
            "bench",
            [DepartmentSpec("health"), DepartmentSpec("statistics")],
        )
        # Shape what leaves the provider: both fednode's chunks and Flight's batches.
        shaped = lab.run(
            "health",
            ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", LINK,
             "burst", "256kb", "latency", "50ms"],
        )  # fmt: skip
        if shaped.returncode != 0:
            pytest.skip(f"cannot shape the lab link: {shaped.stderr.strip()}")
        fed.start("health")
        fed.start("statistics")
        fed.wait_ready(["health", "statistics"])
        yield fed
    finally:
        lab.close()


def _agreement(fed: LabFederation, data: Path, tmp: Path) -> str:
    fed.admin("health", "dataset.add", {"name": "bench", "path": str(data)})
    file = tmp / "bench.agreement"
    created = fed.fednode(
        "health", "agreement", "create", "--consumer", "statistics", "--dataset", "bench",
        "--purpose-code", "BENCH", "--valid-until", "+1d", "--mode", "transfer",
        "--column", "id=plain", "--column", "value=plain", "--column", "score=plain",
        "--column", "text=plain", "--out", file,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    pushed = fed.fednode("statistics", "agreement", "countersign", file, "--push")
    assert pushed.returncode == 0, pushed.stderr
    return str(json.loads(file.read_bytes())["agreement"]["id"])


def test_encrypted_share_vs_flight_over_a_shaped_link(
    linked: LabFederation, tmp_path: Path
) -> None:
    data = tmp_path / "bench.parquet"
    arrow_bytes = write_parquet(data, ROWS)
    agreement = _agreement(linked, data, tmp_path)
    lab = linked.lab
    location = f"grpc://{lab.address('health')}:{FLIGHT_PORT}"
    server = lab.popen(
        "health", [sys.executable, "-c", FLIGHT_SERVER, str(data), location],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    rates: dict[str, list[float]] = {"fednode": [], "flight": []}
    wire: list[int] = []
    loads = [load()]
    try:
        time.sleep(1.0)  # the Flight server binds its port
        for run in range(RUNS):
            settle()
            out = tmp_path / f"share-{run}.arrow"
            started = time.perf_counter()
            result = linked.admin(
                "statistics", "share.fetch", {"from": "health", "agreement": agreement,
                                              "out": str(out)},
            )  # fmt: skip
            rates["fednode"].append(arrow_bytes / (time.perf_counter() - started))
            wire.append(int(result["bytes"]))
            assert result["rows"] == ROWS
            out.unlink()
            settle()
            fetched = lab.run(
                "statistics",
                [sys.executable, "-c", FLIGHT_CLIENT, location, str(tmp_path / "flight.arrow")],
                timeout=600,
            )
            assert fetched.returncode == 0, fetched.stderr
            flight = json.loads(fetched.stdout)
            assert abs(flight["bytes"] - arrow_bytes) < arrow_bytes / 100  # the same table
            rates["flight"].append(arrow_bytes / flight["seconds"])
            (tmp_path / "flight.arrow").unlink()
            loads.append(load())
    finally:
        server.terminate()
        server.wait(timeout=10)
    pairs = [a / b for a, b in zip(rates["fednode"], rates["flight"], strict=True)]
    print(
        f"\nexchange over a {LINK} link between two namespaces: {ROWS:,} rows, "
        f"{arrow_bytes / 1e6:.0f} MB Arrow, {RUNS} runs (MB/s of Arrow data)\n"
        f"  fednode (mTLS, envelope v1, zstd): median "
        f"{statistics.median(rates['fednode']) / 1e6:.0f} MB/s "
        f"{[round(r / 1e6) for r in rates['fednode']]}, "
        f"{statistics.median(wire) / 1e6:.0f} MB on the wire\n"
        f"  pyarrow.flight DoGet, plaintext: median "
        f"{statistics.median(rates['flight']) / 1e6:.0f} MB/s "
        f"{[round(r / 1e6) for r in rates['flight']]}\n"
        f"  ratio fednode / Flight: median {statistics.median(pairs):.2f}x "
        f"{[round(p, 2) for p in pairs]}\n"
        f"  load average (1, 5, 15 min) per run: {' | '.join(loads)}"
    )
