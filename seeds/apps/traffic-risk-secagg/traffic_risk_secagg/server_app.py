"""ServerApp: FedAvg through LegacyContext + DefaultWorkflow + SecAggPlusWorkflow."""

from __future__ import annotations

import numpy as np
from flwr.app import Context
from flwr.common import Metrics, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from traffic_risk_secagg import task

app = ServerApp()


def _weighted_accuracy(metrics: list[tuple[int, Metrics]]) -> Metrics:
    total = sum(n for n, _ in metrics)
    return {"eval-acc": sum(n * float(m["eval-acc"]) for n, m in metrics) / max(total, 1)}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` SecAgg+ rounds, then a federated evaluation each round."""
    cfg = context.run_config
    min_nodes = int(cfg["min-nodes"])
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=min_nodes,
        min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(
            [np.zeros(task.NUM_FEATURES), np.zeros(1)]
        ),
        evaluate_metrics_aggregation_fn=_weighted_accuracy,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=int(cfg["num-shares"]),
            reconstruction_threshold=int(cfg["reconstruction-threshold"]),
            clipping_range=float(cfg["clipping-range"]),
            quantization_range=int(cfg["quantization-range"]),
        )
    )
    workflow(grid, legacy)
