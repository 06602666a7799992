"""A federation across network namespaces: mTLS, a share, a cut link mid-share, and the ledgers.

Four departments of the seed city each run ``fednode serve`` in their own
namespace with their own address, joined by a bridge. The public-security
bureau shares accident reports with the traffic bureau under a signed
agreement; then a large share is interrupted by cutting the provider's link,
which must fail cleanly, and succeeds once the link is back. The data bureau
then coordinates a federated job with SecAgg+ and DP over the three
departments' road_safety tables. Finally every ledger is checkpointed,
cosigned by witnesses across the namespaces, exported, and verified offline
together, which cross-checks every share.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from labfed import LabFederation, provision_in_lab
from netns import Lab, unavailable_reason

from ledger.canonical import dumps
from node.localfed import DepartmentSpec

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "seeds" / "data"
DEPARTMENTS = [
    DepartmentSpec("data-bureau", "Municipal Big Data Bureau", witness=False),
    DepartmentSpec("traffic", "Traffic Management Bureau"),
    DepartmentSpec("public-security", "Public Security Bureau"),
    DepartmentSpec("civil-affairs", "Civil Affairs Bureau"),
]
ACCIDENT_COLUMNS = [
    "accident_id=pseudonymize",
    "occurred_at=generalize:to=hour",
    "intersection_id=plain",
    "severity=plain",
    "persons_injured=plain",
    "plate_tokens=drop",
]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFederation]:
    # One lab for the module: starting four nodes is the expensive part.
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    lab = Lab.create([d.department for d in DEPARTMENTS])
    try:
        federation = provision_in_lab(
            lab, tmp_path_factory.mktemp("city"), "riverside", DEPARTMENTS, witness_threshold=2
        )
        for spec in DEPARTMENTS:
            federation.start(spec.department)
        federation.wait_ready([d.department for d in DEPARTMENTS])
        yield federation
    finally:
        lab.close()


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _agreement(
    city: LabFederation, tmp: Path, provider: str, consumer: str, dataset: str, columns: list[str]
) -> str:
    file = tmp / f"{dataset}.agreement"
    _ok(city.fednode(
        provider, "agreement", "create", "--consumer", consumer, "--dataset", dataset,
        "--purpose-code", "road-safety-planning", "--purpose", "re-time signals",
        "--valid-until", "+1d", "--mode", "transfer",
        *[a for c in columns for a in ("--column", c)], "--out", file,
    ))  # fmt: skip
    _ok(city.fednode(consumer, "agreement", "countersign", file, "--push"))
    agreement_id: str = json.loads(file.read_bytes())["agreement"]["id"]
    return agreement_id


def test_every_node_reaches_every_peer_over_mtls_across_namespaces(city: LabFederation) -> None:
    # The operator's command, once; then the same admin call for every department.
    shown = _ok(city.fednode("traffic", "status"))
    assert "public-security" in shown.stdout and "civil-affairs" in shown.stdout
    for spec in DEPARTMENTS:
        status = city.admin(spec.department, "node.status", {})
        assert status["endpoint"] == f"{city.lab.address(spec.department)}:7443"
        peers = {p["department"]: p for p in status["peers"]}
        assert set(peers) == {d.department for d in DEPARTMENTS} - {spec.department}
        for peer, info in peers.items():
            assert info["reachable"], (spec.department, peer, info)
            assert info["endpoint"].startswith(city.lab.address(peer))


def test_the_deploy_health_check_passes_in_each_namespace_and_leaves_no_entry(
    city: LabFederation,
) -> None:
    def ledger_size(department: str) -> int:
        size: int = city.admin(department, "ledger.show", {"limit": 1})["size"]
        return size

    check = [sys.executable, str(ROOT / "deploy" / "healthcheck.py")]
    for spec in DEPARTMENTS:
        env = {"FEDNODE_HOME": str(city.homes[spec.department]), "PATH": "/usr/bin:/bin"}
        before = ledger_size(spec.department)
        result = city.lab.run(spec.department, check, env=env)
        assert result.returncode == 0, result.stderr
        between = ledger_size(spec.department)
        after = ledger_size(spec.department)
        # Each size query is itself recorded; the health check in between adds nothing.
        assert between - before == after - between, (before, between, after)


def test_a_cut_link_makes_the_peer_unreachable_then_restore_heals(city: LabFederation) -> None:
    city.lab.cut("civil-affairs")
    try:
        status = city.admin("traffic", "node.status", {})
        peers = {p["department"]: p for p in status["peers"]}
        assert not peers["civil-affairs"]["reachable"]
        assert peers["public-security"]["reachable"]
    finally:
        city.lab.restore("civil-affairs")
    status = city.admin("traffic", "node.status", {})
    assert all(p["reachable"] for p in status["peers"])


def test_seed_accidents_travel_from_public_security_to_traffic(
    city: LabFederation, tmp_path: Path
) -> None:
    _ok(city.fednode("public-security", "dataset", "add", "accidents",
                     SEEDS / "public-security" / "accidents.parquet"))  # fmt: skip
    agreement_id = _agreement(
        city, tmp_path, "public-security", "traffic", "accidents", ACCIDENT_COLUMNS
    )
    out = tmp_path / "received" / "accidents.parquet"
    out.parent.mkdir()
    result = _ok(city.fednode("traffic", "share", "fetch", "--from", "public-security",
                              "--agreement", agreement_id, "--out", out, "--json"))  # fmt: skip
    summary = json.loads(result.stdout)
    table = pq.read_table(out)
    source = pq.read_table(SEEDS / "public-security" / "accidents.parquet")
    assert summary["rows"] == table.num_rows == source.num_rows
    assert table.column_names == [
        "accident_id", "occurred_at", "intersection_id", "severity", "persons_injured",
    ]  # fmt: skip
    # Plates never left, and ids arrive as agreement-scoped tokens.
    assert "plate_tokens" not in table.column_names
    assert set(table["accident_id"].to_pylist()).isdisjoint(source["accident_id"].to_pylist())


FL_PARTICIPANTS = ["traffic", "public-security", "civil-affairs"]
FL_COLUMNS = [
    "night", "rush_hour", "weekend", "flow_index", "heavy_vehicle_share", "speed_index",
    "pedestrian_index", "rain_index", "cycle_index", "elderly_share", "violation_index",
    "split", "incident",
]  # fmt: skip


def test_a_federated_round_with_secagg_and_dp_runs_across_namespaces(
    city: LabFederation, tmp_path: Path
) -> None:
    fab = tmp_path / "traffic-risk.fab"
    _ok(city.fednode("data-bureau", "app", "build", ROOT / "seeds" / "apps" / "traffic-risk",
                     "--out", fab))  # fmt: skip
    # The share test above drives dataset and agreement commands through the CLI;
    # here the same admin calls go straight to the sockets, to keep the test short.
    agreements = {}
    columns = {c: {"treatment": "plain"} for c in FL_COLUMNS}
    for department in FL_PARTICIPANTS:
        path = SEEDS / department / "road_safety.parquet"
        city.admin(department, "dataset.add", {"name": "road_safety", "path": str(path)})
        proposed = city.admin(department, "agreement.create", {
            "consumer": "data-bureau", "dataset": "road_safety",
            "purpose_code": "road-safety-model", "purpose_text": "intersection risk model",
            "valid_from": None, "valid_until": int(time.time()) + 86_400,
            "modes": ["federated"], "columns": columns,
        })  # fmt: skip
        signed = dumps({k: proposed[k] for k in ("agreement", "provider_signature")})
        countersign = {"agreement_b64": base64.b64encode(signed).decode(), "push": True}
        city.admin("data-bureau", "agreement.countersign", countersign)
        agreements[department] = proposed["agreement"]["id"]
        _ok(city.fednode(department, "app", "approve", fab))
    job = tmp_path / "road-safety.toml"
    participants = "".join(
        f'[[participants]]\ndepartment = "{d}"\ndataset = "road_safety"\n'
        f'agreement = "{agreements[d]}"\n'
        for d in FL_PARTICIPANTS
    )
    job.write_text(
        f'[job]\nname = "road-safety"\napp = "{fab}"\nrounds = 2\noutput = "results"\n'
        "secagg = true\n[strategy]\nmin-nodes = 3\n"
        "[run-config]\nlocal-epochs = 50\nlearning-rate = 1.0\n"
        "[dp]\nclipping-norm = 25.0\nsensitivity = 0.05\nepsilon = 5.0\ndelta = 1e-5\n"
        + participants
    )
    started = time.monotonic()
    _ok(city.fednode("data-bureau", "fl", "launch", job, timeout=600))
    print(f"two SecAgg+ rounds across namespaces took {time.monotonic() - started:.1f} s")

    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["outcome"] == "ok", summary
    rounds = json.loads((tmp_path / "results" / "rounds.json").read_text())
    assert rounds and all(sorted(r["ok"]) == sorted(FL_PARTICIPANTS) for r in rounds)
    job_events = _events(city, "data-bureau", "fl.job")
    assert [e["detail"]["phase"] for e in job_events[-2:]] == ["start", "end"]
    assert job_events[-2]["detail"]["secagg"] is True
    # Canonical JSON has no floats, so the ledger keeps DP parameters as decimal strings.
    assert float(job_events[-2]["detail"]["dp"]["epsilon"]) == 5.0
    for department in FL_PARTICIPANTS:
        recorded = _events(city, department, "fl")
        tasks = [e for e in recorded if e["event"] == "fl.task"]
        replies = [e for e in recorded if e["event"] == "fl.reply"]
        assert tasks and all(t["peer"] == "data-bureau" for t in tasks)
        assert {t["agreement"] for t in tasks} == {agreements[department]}
        assert replies and all(r["digest"].startswith("sha256:") for r in replies)


#: Rows of the bulk share: ~70 MB, far more than the transport and receive windows hold
#: (16 MiB each), so the share is still streaming when the link is cut.
BULK_ROWS = 2_000_000


def _big_dataset(path: Path, rows: int = BULK_ROWS) -> None:
    pq.write_table(
        pa.table({
            "intersection_id": [f"INT-{i % 48 + 1:04d}" for i in range(rows)],
            "note": [f"violation-record-{i:09d}" for i in range(rows)],
        }),
        path,
        row_group_size=10_000,
    )  # fmt: skip


def test_a_link_cut_mid_share_fails_cleanly_and_the_retry_succeeds(
    city: LabFederation, tmp_path: Path
) -> None:
    # Runs after the federated job: the provider's side of the interrupted stream
    # can stay open until its node stops (the server sends no keepalives), and
    # work at that node has been seen to stall behind it.
    big = tmp_path / "bulk.parquet"
    _big_dataset(big)
    _ok(city.fednode("public-security", "dataset", "add", "bulk", big))
    agreement_id = _agreement(
        city, tmp_path, "public-security", "traffic", "bulk",
        ["intersection_id=plain", "note=plain"],
    )  # fmt: skip
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    out = out_dir / "bulk.parquet"
    fetch = [
        sys.executable, "-m", "node.cli.main", "share", "fetch", "--home",
        str(city.homes["traffic"]), "--from", "public-security", "--agreement", agreement_id,
        "--out", str(out), "--json", "--compression", "none",
    ]  # fmt: skip
    # A rate limit keeps the share in flight long enough to cut the cable under it.
    process = city.lab.popen("traffic", [*fetch, "--limit-rate", "300000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    # Cut only once the provider is streaming, however slowly the CLI started.
    deadline = time.monotonic() + 60
    while not any(
        e["agreement"] == agreement_id for e in _events(city, "public-security", "share.started")
    ):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the share never started"
        time.sleep(0.5)
    time.sleep(1.5)
    assert process.poll() is None, process.communicate()
    cut_at = time.monotonic()
    city.lab.cut("public-security")
    try:
        _, stderr = process.communicate(timeout=150)
    finally:
        city.lab.restore("public-security")
    failed_after = time.monotonic() - cut_at
    print(f"share failed {failed_after:.1f} s after the cut: {stderr.strip()}")
    assert process.returncode == 5, stderr  # 5 = peer error
    assert "public-security" in stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []

    failed = _events(city, "traffic", "share.failed")
    assert failed and failed[-1]["peer"] == "public-security"
    assert failed[-1]["agreement"] == agreement_id

    retry = _ok(city.lab.run("traffic", fetch, timeout=150))
    summary = json.loads(retry.stdout)
    assert summary["rows"] == BULK_ROWS
    assert pq.read_table(out).num_rows == BULK_ROWS
    received = _events(city, "traffic", "share.received")
    assert received[-1]["detail"]["share_id"] == summary["share_id"]
    assert received[-1]["digest"] == summary["digest"]


def _events(city: LabFederation, department: str, event: str) -> list[dict[str, Any]]:
    """Entries of type ``event`` (or under the prefix ``event.``), as 'ledger show' gets them."""
    shown = city.admin(department, "ledger.show", {"event": event, "limit": 1000})
    entries: list[dict[str, Any]] = shown["entries"]
    return [e for e in entries if e["event"] == event or e["event"].startswith(event + ".")]


def test_ledgers_are_witnessed_across_namespaces_and_verify_offline(
    city: LabFederation, tmp_path: Path
) -> None:
    # Runs last: the ledgers hold the shares, the failed share, the retry and the FL job.
    # The operator's command once, then the same admin call for the others.
    shown = _ok(city.fednode("traffic", "ledger", "checkpoint"))
    assert "published" in shown.stdout and "NOT" not in shown.stdout, shown.stdout
    for spec in DEPARTMENTS:
        checkpoint = city.admin(spec.department, "ledger.checkpoint", {})
        assert checkpoint["published"], (spec.department, checkpoint)
        witnesses = {d.department for d in DEPARTMENTS if d.witness} - {spec.department}
        assert set(checkpoint["cosigners"]) <= witnesses
        assert len(checkpoint["cosigners"]) >= 2
    sent = [e for e in _events(city, "public-security", "share.sent") if e["outcome"] == "ok"]
    received = _events(city, "traffic", "share.received")
    assert {e["detail"]["share_id"] for e in sent} == {e["detail"]["share_id"] for e in received}
    assert len(received) == 2  # the seed accidents and the retried bulk share

    bundles = []
    for spec in DEPARTMENTS:
        bundle = tmp_path / f"{spec.department}.zip"
        _ok(city.fednode(spec.department, "ledger", "export", "--out", bundle))
        bundles.append(bundle)
    # The auditor's check is offline: it runs in no namespace, with no node reachable.
    verified = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "ledger", "verify", *map(str, bundles),
         "--ca", str(city.fed.ca_pem)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "verified" in verified.stdout
