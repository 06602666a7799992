"""Round latency of one Flower app on the same nodes: NodeGrid vs Flower's Deployment Engine.

NodeGrid side: real ``fednode serve`` processes over mTLS (coordinator plus
three participants reading their seed ``road_safety`` tables through real
agreements). Deployment Engine side: ``flower-superlink`` plus three
``flower-supernode`` processes reading the same files, the app submitted with
``flwr run``. A round is one training and one evaluation phase of the
message-API FedAvg app (``traffic-risk``). Prints medians and the ratio; never
fails on time. Target: NodeGrid round latency at most 0.2x the Deployment Engine's.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from node.admin.client import invoke
from tests.integration.test_fl_harness import (
    APP,
    COORDINATOR,
    PARTICIPANTS,
    SEED_DATA,
    DeploymentEngine,
    fl_federation,
    write_job,
)

pytestmark = pytest.mark.benchmark

NODEGRID_ROUNDS = 8
ENGINE_ROUNDS = 3


def _nodegrid_rounds(root: Path) -> list[float]:
    fed, agreements = fl_federation(root / "fed")
    try:
        job = write_job(root / "job.toml", agreements, rounds=NODEGRID_ROUNDS, min_nodes=3)
        summary: dict[str, Any] = invoke(
            fed.homes[COORDINATOR], "fl.launch", {"job_file": str(job)}, on_event=lambda _e: None
        )
        assert summary["outcome"] == "ok"
        phases = json.loads((root / "results" / "rounds.json").read_text())
    finally:
        fed.stop_all()
    per_round: dict[int, list[float]] = {}
    for phase in phases:
        per_round.setdefault(phase["round"], []).extend([phase["started"], phase["finished"]])
    return [max(t) - min(t) for _, t in sorted(per_round.items())]


def test_round_latency_nodegrid_vs_deployment_engine(tmp_path: Path) -> None:
    nodegrid = _nodegrid_rounds(tmp_path / "nodegrid")
    engine = DeploymentEngine(
        tmp_path / "flower", [SEED_DATA / d / "road_safety.parquet" for d in PARTICIPANTS]
    )
    try:
        engine.start()
        started = time.monotonic()
        engine_rounds, run = engine.run(
            APP, f"num-server-rounds={ENGINE_ROUNDS} min-nodes=3", timeout=1200
        )
        wall = time.monotonic() - started
    finally:
        engine.stop()
    assert run["status"] == "finished:completed", run["log"][-2000:]
    ng = statistics.median(nodegrid)
    de = statistics.median(engine_rounds)
    print(
        f"\nFL round latency, same app (traffic-risk, message-API FedAvg), 3 participants:\n"
        f"  NodeGrid (fednode mTLS)  median {ng * 1000:8.1f} ms over {len(nodegrid)} rounds "
        f"{[round(r, 3) for r in nodegrid]}\n"
        f"  Deployment Engine        median {de * 1000:8.1f} ms over {len(engine_rounds)} rounds "
        f"{[round(r, 2) for r in engine_rounds]} (run {run['elapsed']:.1f} s "
        f"ServerApp time, {wall:.1f} s wall)\n"
        f"  ratio NodeGrid / Deployment Engine = {ng / de:.4f}  (target <= 0.2)"
    )
