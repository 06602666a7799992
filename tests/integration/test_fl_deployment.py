"""Scale path: the same sample app runs unchanged on Flower's Deployment Engine.

Real ``flower-superlink`` and ``flower-supernode`` processes on loopback
(insecure mode, which Flower allows there), the app submitted with
``flwr run``; each SuperNode reads a department's seed table through
``--node-config data-path=...``, exactly as a fednode participant hands it over.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_fl_harness import APP, PARTICIPANTS, SEED_DATA, DeploymentEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sample_app_runs_unchanged_on_flowers_deployment_engine(tmp_path: Path) -> None:
    engine = DeploymentEngine(
        tmp_path / "flower", [SEED_DATA / d / "road_safety.parquet" for d in PARTICIPANTS[:2]]
    )
    try:
        engine.start()
        rounds, run = engine.run(APP, "num-server-rounds=1 min-nodes=2", timeout=300)
    finally:
        engine.stop()
    assert run["status"] == "finished:completed", run["log"][-3000:]
    assert run["fab-id"] == "fednode/traffic-risk"
    assert "aggregate_train: Received 2 results and 0 failures" in run["log"]
    assert "aggregate_evaluate: Received 2 results and 0 failures" in run["log"]
    assert len(rounds) == 1
