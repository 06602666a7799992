"""Encrypted share throughput against plaintext Arrow Flight, and both nodes' peak RSS.

Both sides do the same work on the data, on loopback, and differ only in what
the share path adds:

* source: the same uncompressed Parquet file (row groups of 256 Ki rows),
  read the same way (``pyarrow.parquet.ParquetFile.iter_batches``, all four
  columns, batches of 256 Ki rows, no pre-buffering: how fednode reads a
  Parquet dataset, see ``node/catalog/source.py``);
* sink: the receiver writes the table to an Arrow IPC file (no Parquet
  encoding on either side; the fednode Parquet output is reported separately);
* fednode: two real ``fednode serve`` processes, gRPC over mTLS, envelope v1
  (HPKE + AES-256-GCM chunks of at most 4 MiB, SHA-256 of the plaintext on both
  ends, signed header and trailer), plain treatments, agreement checks per chunk,
  fsync and rename of the output; Arrow buffers zstd-compressed before sealing
  (the default), and again with ``compression=none``. The receiver appends each
  checked message unchanged, so the default output is a zstd-compressed Arrow
  IPC file (the form ``pyarrow.feather`` writes with zstd) and the receiver
  never decompresses;
* Flight: a ``pyarrow.flight`` server process answering DoGet in plaintext
  (no TLS); the client is this test process and writes the batches it
  receives, uncompressed, since Flight hands it decoded batches. The target
  ratio is against this. For reference it also answers with zstd IPC body
  compression, runs once more fsyncing its output before it stops the
  clock, which fednode always does (its output is durable when the command
  returns), and once over mutual TLS with the nodes' own certificates (a
  second server process), the transport fednode always uses.

Because fednode's default output stays compressed, whoever reads it later
pays for decompression; the benchmark reports that cost too (reading each
output file back into memory), so the comparison hides nothing.

Throughput is the table's Arrow size over wall time for every variant, so
compression shows up as time saved, never as inflated bytes. The ratio is
fednode (default) / Flight plaintext, median over interleaved runs (target >=
1.0x), with a bootstrap 90% interval of that median, since the noise of a
shared machine moves single runs by a fifth either way. The benchmark table's
text column repeats a long suffix, so it compresses far better (about 12x)
than most real tables (the seed data: about 3.6x); the uncompressed ratio is
the floor for incompressible data. CPU seconds per GB add user and system time
of both ends of each. The receiver's peak RSS is read from the consumer node's
``VmHWM`` after resetting it, and compared with its RSS before the share. One
untimed round warms both sides up. Dirty pages are written back (untimed)
before each run, so no run pays for the previous one's writeback. The load
average is printed beside the figures, since other work on the machine moves
them. Nothing here fails on time. ``FEDNODE_BENCH_ROWS`` scales the ratio
runs; ``FEDNODE_BENCH_SCALE_ROWS`` the >= 1 GB scale run (0 skips it).
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyarrow import flight

from node.admin.client import invoke
from node.localfed import DepartmentSpec, LocalFederation
from tests.integration.conftest import federation_factory  # noqa: F401 -- the shared fixture
from tests.integration.helpers import fednode
from tests.integration.test_exchange import start

pytestmark = pytest.mark.benchmark

RATIO_ROWS = int(os.environ.get("FEDNODE_BENCH_ROWS", "3000000"))
SCALE_ROWS = int(os.environ.get("FEDNODE_BENCH_SCALE_ROWS", "12000000"))
RUNS = int(os.environ.get("FEDNODE_BENCH_RUNS", "5"))

FLIGHT_SERVER = """
import sys
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq

class Server(fl.FlightServerBase):
    def __init__(self, path, location, **tls):
        super().__init__(location, **tls)
        self.path = path
    def do_get(self, context, ticket):
        file = pq.ParquetFile(self.path, pre_buffer=False)
        reader = pa.RecordBatchReader.from_batches(
            file.schema_arrow, file.iter_batches(batch_size=256 * 1024))
        codec = ticket.ticket.decode() or None
        return fl.RecordBatchStream(reader, options=pa.ipc.IpcWriteOptions(compression=codec))

# argv: the Parquet file, where to listen (loopback, any free port, by default), and for
# mutual TLS the server's certificate, its key and the CA its clients must chain to.
tls = {}
if len(sys.argv) > 3:
    cert, key, ca = (open(p, "rb").read() for p in sys.argv[3:6])
    tls = dict(tls_certificates=[fl.CertKeyPair(cert, key)], verify_client=True,
               root_certificates=ca)
server = Server(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "grpc://127.0.0.1:0", **tls)
print(server.port, flush=True)
server.serve()
"""


def make_table(rows: int) -> pa.Table:
    """About 90 bytes per row of Arrow data: ids, measures and a text column."""
    ids = pa.array(range(rows), pa.int64())
    text = pc.binary_join_element_wise(
        pc.cast(ids, pa.string()), "district-record-with-some-padding-text-0123456789-abcdef", "-"
    )
    return pa.table(
        {
            "id": ids,
            "value": pc.multiply(ids, 7),
            "score": pc.divide(pc.cast(ids, pa.float64()), 3.0),
            "text": text,
        }
    )


def write_parquet(path: Path, rows: int) -> int:
    """Write ``rows`` rows in slices (bounded memory); returns the Arrow size in bytes."""
    step = 1_000_000
    size = 0
    writer: pq.ParquetWriter | None = None
    for start_row in range(0, rows, step):
        part = make_table(min(step, rows - start_row))
        part = part.set_column(0, "id", pc.add(part["id"], start_row))
        size += part.nbytes
        if writer is None:
            writer = pq.ParquetWriter(path, part.schema, compression="none")
        writer.write_table(part, row_group_size=256 * 1024)
    assert writer is not None
    writer.close()
    return size


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets the process's peak RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Nodes:
    def __init__(self, fed: LocalFederation, tmp: Path) -> None:
        self.fed = fed
        self.tmp = tmp
        self.count = 0

    def share(self, dataset: str, path: Path) -> str:
        fednode("dataset", "add", dataset, path, "--home", self.fed.homes["health"], check=True)
        file = self.tmp / f"{dataset}.agreement"
        fednode(
            "agreement", "create", "--home", self.fed.homes["health"], "--consumer", "statistics",
            "--dataset", dataset, "--purpose-code", "BENCH", "--valid-until", "+1d",
            "--mode", "transfer", "--column", "id=plain", "--column", "value=plain",
            "--column", "score=plain", "--column", "text=plain", "--out", file, check=True,
        )  # fmt: skip
        fednode(
            "agreement",
            "countersign",
            file,
            "--push",
            "--home",
            self.fed.homes["statistics"],
            check=True,
        )
        return str(json.loads(file.read_bytes())["agreement"]["id"])

    @property
    def pids(self) -> list[int]:
        return [self.fed.processes[d].pid for d in ("health", "statistics")]

    def fetch(
        self, agreement: str, suffix: str = ".arrow", compression: str = "zstd", keep: bool = False
    ) -> tuple[float, dict[str, Any], int, int]:
        self.count += 1
        out = self.tmp / f"out-{self.count}{suffix}"
        pid = self.fed.processes["statistics"].pid
        reset_peak(pid)
        before = current_rss(pid)
        started = time.perf_counter()
        result = invoke(
            self.fed.homes["statistics"],
            "share.fetch",
            {"from": "health", "agreement": agreement, "out": str(out), "compression": compression},
        )
        seconds = time.perf_counter() - started
        peak = peak_rss(pid)
        if not keep:
            out.unlink()
        return seconds, result, before, peak


def settle() -> None:
    """Write back the previous run's output before the next run starts, untimed.

    Flight's client does not fsync, so without this the kernel would write its
    file back during whichever run came next.
    """
    os.sync()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def read_back_seconds(path: Path) -> float:
    """Time to read an Arrow IPC output file completely into memory (decompressing it)."""
    started = time.perf_counter()
    with pa.ipc.open_file(str(path)) as reader:
        reader.read_all()
    return time.perf_counter() - started


def median_interval(values: list[float], level: float = 0.9) -> tuple[float, float]:
    """Bootstrap interval of the median: how far the noise of this machine moves it.

    Seeded, so the same runs always print the same interval.
    """
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(2000))
    tail = (1 - level) / 2
    return medians[int(tail * len(medians))], medians[int((1 - tail) * len(medians)) - 1]


@dataclass(frozen=True)
class FlightTls:
    """Mutual TLS for Flight with the federation's own certificates, as the nodes use."""

    server: tuple[Path, Path]  #: certificate and key
    client: tuple[Path, Path]
    ca: Path
    server_name: str

    @classmethod
    def of(cls, fed: LocalFederation, server: str, client: str) -> FlightTls:
        def pair(department: str) -> tuple[Path, Path]:
            home = fed.homes[department]
            return home / "tls" / "node.pem", home / "keys" / "tls.key"

        return cls(pair(server), pair(client), fed.ca_pem, f"{server}.{fed.federation}.fednode")


def flight_fetch(
    port: int,
    out: Path,
    codec: str = "",
    *,
    keep: bool = False,
    durable: bool = False,
    tls: FlightTls | None = None,
) -> tuple[float, int]:
    """DoGet into an Arrow IPC file; ``durable`` also fsyncs it, as fednode does its output."""
    if tls is None:
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    else:
        client = flight.FlightClient(
            f"grpc+tls://127.0.0.1:{port}",
            tls_root_certs=tls.ca.read_bytes(),
            cert_chain=tls.client[0].read_bytes(),
            private_key=tls.client[1].read_bytes(),
            override_hostname=tls.server_name,
        )
    started = time.perf_counter()
    reader = client.do_get(flight.Ticket(codec.encode()))
    nbytes = 0
    with pa.ipc.new_file(str(out), reader.schema) as writer:
        for chunk in reader:
            writer.write_batch(chunk.data)
            nbytes += chunk.data.nbytes
    if durable:
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - started
    client.close()
    if not keep:
        out.unlink()
    return seconds, nbytes


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Nodes:
    factory = request.getfixturevalue("federation_factory")
    fed: LocalFederation = factory(
        [DepartmentSpec("health"), DepartmentSpec("statistics")], start=False
    )
    start(fed, "health")
    start(fed, "statistics")
    return Nodes(fed, tmp_path)


def test_encrypted_share_vs_flight(nodes: Nodes, tmp_path: Path) -> None:
    data = tmp_path / "bench.parquet"
    arrow_bytes = write_parquet(data, RATIO_ROWS)
    agreement = nodes.share("bench", data)
    server = subprocess.Popen(
        [sys.executable, "-c", FLIGHT_SERVER, str(data)], stdout=subprocess.PIPE, text=True
    )
    tls = FlightTls.of(nodes.fed, "health", "statistics")
    tls_server = subprocess.Popen(
        [sys.executable, "-c", FLIGHT_SERVER, str(data), "grpc+tls://127.0.0.1:0",
         *map(str, (*tls.server, tls.ca))],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    variants = ("zstd", "none", "flight", "flight-zstd", "flight-durable", "flight-mtls")
    rates: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in rates}
    sender_cpu: list[float] = []
    receiver_cpu: list[float] = []
    wire: list[int] = []
    peaks: list[int] = []
    try:
        assert server.stdout is not None and tls_server.stdout is not None
        port = int(server.stdout.readline())
        tls_port = int(tls_server.stdout.readline())
        # One untimed round first: thread pools, allocators and page cache warm up on both sides.
        for compression in ("zstd", "none"):
            nodes.fetch(agreement, compression=compression)
        for codec in ("", "zstd"):
            flight_fetch(port, tmp_path / "flight.arrow", codec)
        flight_fetch(tls_port, tmp_path / "flight.arrow", tls=tls)
        loads = [load()]
        for _ in range(RUNS):
            # Interleaved, so every variant sees the same machine state (page cache, thermal).
            for compression in ("zstd", "none"):
                settle()
                cpu_before = [cpu_seconds(p) for p in nodes.pids]
                seconds, result, before, peak = nodes.fetch(agreement, compression=compression)
                cpu_after = [cpu_seconds(p) for p in nodes.pids]
                rates[compression].append(arrow_bytes / seconds)
                cpu[compression].append(sum(cpu_after) - sum(cpu_before))
                peaks.append(peak - before)
                if compression == "zstd":
                    sender_cpu.append(cpu_after[0] - cpu_before[0])
                    receiver_cpu.append(cpu_after[1] - cpu_before[1])
                    wire.append(result["bytes"])
            for name, codec in (
                ("flight", ""),
                ("flight-zstd", "zstd"),
                ("flight-durable", ""),
                ("flight-mtls", ""),
            ):
                settle()
                serving = tls_server if name == "flight-mtls" else server
                flight_cpu = cpu_seconds(serving.pid) + self_cpu_seconds()
                f_seconds, f_bytes = flight_fetch(
                    tls_port if name == "flight-mtls" else port,
                    tmp_path / "flight.arrow",
                    codec,
                    durable=name == "flight-durable",
                    tls=tls if name == "flight-mtls" else None,
                )
                assert abs(f_bytes - arrow_bytes) < arrow_bytes / 100  # the same table
                rates[name].append(arrow_bytes / f_seconds)
                cpu[name].append(cpu_seconds(serving.pid) + self_cpu_seconds() - flight_cpu)
            loads.append(load())
        # The same share into Parquet: the receiver then also encodes Parquet.
        cpu_before = [cpu_seconds(p) for p in nodes.pids]
        pq_seconds, pq_result, pq_before, pq_peak = nodes.fetch(agreement, ".parquet")
        pq_cpu = [cpu_seconds(p) - b for p, b in zip(nodes.pids, cpu_before, strict=True)]
        # What reading each output back costs (page cache warm for both).
        nodes.fetch(agreement, keep=True)
        ours = nodes.tmp / f"out-{nodes.count}.arrow"
        flight_fetch(port, tmp_path / "flight-kept.arrow", keep=True)
        read_back = {
            "fednode": statistics.median(read_back_seconds(ours) for _ in range(3)),
            "flight": statistics.median(
                read_back_seconds(tmp_path / "flight-kept.arrow") for _ in range(3)
            ),
        }
        sizes = {
            "fednode": ours.stat().st_size,
            "flight": (tmp_path / "flight-kept.arrow").stat().st_size,
        }
    finally:
        for process in (server, tls_server):
            process.terminate()
            process.wait()
    per_gb = 1e9 / arrow_bytes

    def ratio(ours: str, theirs: str) -> str:
        pairs = [a / b for a, b in zip(rates[ours], rates[theirs], strict=True)]
        low, high = median_interval(pairs)
        return (
            f"median {statistics.median(pairs):.2f}x (90% interval {low:.2f}-{high:.2f})  "
            f"{[round(r, 2) for r in pairs]}"
        )

    def with_read_back(name: str, reader: str) -> float:
        """Arrow bytes over (median share time + time to read the output back)."""
        share_seconds = statistics.median(arrow_bytes / r for r in rates[name])
        return arrow_bytes / (share_seconds + read_back[reader])

    def line(name: str, label: str) -> str:
        values = rates[name]
        return (
            f"  {label:<34}: median {statistics.median(values) / 1e6:7.1f} MB/s  "
            f"{[round(x / 1e6) for x in values]}  CPU {statistics.median(cpu[name]) * per_gb:.2f}"
            " s/GB\n"
        )

    print(
        f"\nexchange benchmark: {RATIO_ROWS:,} rows, {arrow_bytes / 1e6:.0f} MB Arrow, "
        f"{RUNS} runs (MB/s of Arrow data; CPU seconds per GB of both ends)\n"
        + line("zstd", "fednode, zstd chunks (default)")
        + line("none", "fednode, uncompressed chunks")
        + line("flight", "pyarrow.flight DoGet, plaintext")
        + line("flight-zstd", "pyarrow.flight DoGet, zstd IPC")
        + line("flight-durable", "Flight plaintext + fsync of output")
        + line("flight-mtls", "Flight over mutual TLS (node certs)")
        + f"  ratio fednode / Flight plaintext (target >= 1.0x): {ratio('zstd', 'flight')}\n"
        f"  ratio uncompressed / Flight plaintext: {ratio('none', 'flight')}\n"
        f"  ratio fednode / Flight zstd: {ratio('zstd', 'flight-zstd')}\n"
        f"  ratio fednode / Flight plaintext with its output fsynced, as fednode's is: "
        f"{ratio('zstd', 'flight-durable')}\n"
        f"  ratio fednode / Flight over mutual TLS, as fednode's transport is: "
        f"{ratio('zstd', 'flight-mtls')}\n"
        f"  fednode default: CPU s/GB sender {statistics.median(sender_cpu) * per_gb:.2f}, "
        f"receiver {statistics.median(receiver_cpu) * per_gb:.2f}; "
        f"{statistics.median(wire) / 1e6:.0f} MB on the wire "
        f"({arrow_bytes / statistics.median(wire):.1f}x smaller than the table)\n"
        f"  receiver peak RSS growth: max {max(peaks) / 2**20:.0f} MiB, "
        f"median {statistics.median(peaks) / 2**20:.0f} MiB "
        f"(table {arrow_bytes / 2**20:.0f} MiB)\n"
        f"  reading the .arrow output back: fednode (zstd file, {sizes['fednode'] / 1e6:.0f} MB) "
        f"{read_back['fednode'] * 1e3:.0f} ms, Flight (plain file, {sizes['flight'] / 1e6:.0f} MB) "
        f"{read_back['flight'] * 1e3:.0f} ms; share then read back: fednode "
        f"{with_read_back('zstd', 'fednode') / 1e6:.0f} MB/s, Flight "
        f"{with_read_back('flight', 'flight') / 1e6:.0f} MB/s\n"
        f"  Parquet output (one run): {arrow_bytes / pq_seconds / 1e6:.1f} MB/s, "
        f"CPU s/GB sender {pq_cpu[0] * per_gb:.2f}, receiver {pq_cpu[1] * per_gb:.2f}, "
        f"RSS growth {(pq_peak - pq_before) / 2**20:.0f} MiB, {pq_result['rows']:,} rows\n"
        f"  load average (1, 5, 15 min) per run: {' | '.join(loads)}"
    )


@pytest.mark.skipif(SCALE_ROWS <= 0, reason="FEDNODE_BENCH_SCALE_ROWS=0")
def test_share_at_scale_keeps_receiver_memory_bounded(nodes: Nodes, tmp_path: Path) -> None:
    data = tmp_path / "scale.parquet"
    arrow_bytes = write_parquet(data, SCALE_ROWS)
    agreement = nodes.share("scale", data)
    print(f"\nscale share: {SCALE_ROWS:,} rows ({arrow_bytes / 1e9:.2f} GB Arrow)")
    for suffix in (".arrow", ".parquet"):
        loads = load()
        settle()
        cpu_before = [cpu_seconds(p) for p in nodes.pids]
        provider = nodes.pids[0]
        reset_peak(provider)
        provider_before = current_rss(provider)
        seconds, result, before, peak = nodes.fetch(agreement, suffix)
        provider_peak = peak_rss(provider)
        cpu = [cpu_seconds(p) - b for p, b in zip(nodes.pids, cpu_before, strict=True)]
        assert result["rows"] == SCALE_ROWS
        print(
            f"  to {suffix}: {arrow_bytes / 1e9:.2f} GB of Arrow data in {seconds:.1f}s = "
            f"{arrow_bytes / seconds / 1e6:.0f} MB/s ({result['bytes'] / 1e9:.2f} GB on the "
            f"wire); CPU s/GB sender "
            f"{cpu[0] / arrow_bytes * 1e9:.2f}, receiver {cpu[1] / arrow_bytes * 1e9:.2f}\n"
            f"    receiver RSS before {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
            f"growth {(peak - before) / 2**20:.0f} MiB (chunk 4 MiB; table "
            f"{arrow_bytes / 2**20:.0f} MiB); provider RSS before "
            f"{provider_before / 2**20:.0f} MiB, peak {provider_peak / 2**20:.0f} MiB, growth "
            f"{(provider_peak - provider_before) / 2**20:.0f} MiB; load average before {loads}, "
            f"after {load()}"
        )
