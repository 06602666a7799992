"""ServerApp: federated averaging with Flower's message-API FedAvg strategy."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from traffic_risk import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of training and federated evaluation."""
    cfg = context.run_config
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
        initial_arrays=ArrayRecord(task.initial_weights(len(task.FEATURES))),
        num_rounds=int(cfg["num-server-rounds"]),
        train_config=ConfigRecord({"learning-rate": float(cfg["learning-rate"])}),
    )
