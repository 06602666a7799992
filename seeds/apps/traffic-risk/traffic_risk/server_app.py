"""ServerApp: message-API FedAvg, or legacy FedAvg under SecAgg+ when asked."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import Metrics, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from traffic_risk import task

app = ServerApp()


def _weighted(metrics: list[tuple[int, Metrics]]) -> Metrics:
    total = max(sum(n for n, _ in metrics), 1)
    keys = {k for _, m in metrics for k in m}
    return {k: sum(n * float(m[k]) for n, m in metrics if k in m) / total for k in keys}


def _secure(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    min_nodes = int(cfg["min-nodes"])
    strategy = LegacyFedAvg(
        fraction_fit=float(cfg["fraction-train"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_fit_clients=min_nodes,
        min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(task.initial_weights(int(cfg["num-features"]))),
        fit_metrics_aggregation_fn=_weighted,
        evaluate_metrics_aggregation_fn=_weighted,
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
            max_weight=float(cfg["max-weight"]),
            clipping_range=float(cfg["clipping-range"]),
            quantization_range=int(cfg["quantization-range"]),
        )
    )
    workflow(grid, legacy)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of training and federated evaluation."""
    cfg = context.run_config
    if bool(cfg["secure-aggregation"]):
        _secure(grid, context)
        return
    min_nodes = int(cfg["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.initial_weights(int(cfg["num-features"]))),
        num_rounds=int(cfg["num-server-rounds"]),
        train_config=ConfigRecord({"learning-rate": float(cfg["learning-rate"])}),
    )
