"""ClientApp: trains and evaluates on this node's data only.

With ``secure-aggregation`` on, messages come from Flower's legacy workflows,
so they are handed to a legacy ClientApp built from a ``NumPyClient``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from traffic_risk import task

app = ClientApp()


def _data(context: Context) -> task.Split:
    label = str(context.run_config.get("label-column", task.LABEL))
    split = str(context.run_config.get("split-column", task.SPLIT))
    path = context.node_config.get("data-path")
    if isinstance(path, str) and path:
        return task.load_split(path, label, split)
    # Simulation: no data path, so use the synthetic partition of this node.
    partition = int(context.node_config.get("partition-id", 0))
    return task.split_table(task.synthetic_table(partition), label, split)


def _hyper(context: Context) -> tuple[int, float]:
    cfg = context.run_config
    return int(cfg["local-epochs"]), float(cfg["learning-rate"])


class RiskClient(NumPyClient):  # type: ignore[misc]
    """The same training through Flower's legacy client API (for SecAgg+)."""

    def __init__(self, context: Context) -> None:
        self.data = _data(context)
        self.epochs, self.lr = _hyper(context)

    def get_parameters(self, config: dict[str, object]) -> list[np.ndarray]:
        return task.initial_weights(self.data.x_train.shape[1])

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, object]
    ) -> tuple[list[np.ndarray], int, dict[str, float]]:
        d = self.data
        new = task.train(parameters, d.x_train, d.y_train, self.epochs, self.lr)
        return new, len(d.y_train), {"train-loss": task.loss(new, d.x_train, d.y_train)}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, object]
    ) -> tuple[float, int, dict[str, float]]:
        d = self.data
        acc = task.accuracy(parameters, d.x_test, d.y_test)
        return task.loss(parameters, d.x_test, d.y_test), len(d.y_test), {"eval-acc": acc}


legacy_app = ClientApp(client_fn=lambda context: RiskClient(context).to_client())


def _secure(context: Context) -> bool:
    return bool(context.run_config.get("secure-aggregation", False))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run local epochs from the received global model."""
    if _secure(context):
        return legacy_app(msg, context)
    data = _data(context)
    epochs, lr = _hyper(context)
    new = task.train(
        msg.content["arrays"].to_numpy_ndarrays(), data.x_train, data.y_train, epochs, lr
    )
    metrics = MetricRecord(
        {
            "train-loss": task.loss(new, data.x_train, data.y_train),
            "num-examples": len(data.y_train),
        }
    )
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this node's held-out rows."""
    if _secure(context):
        return legacy_app(msg, context)
    data = _data(context)
    weights = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord(
        {
            "eval-loss": task.loss(weights, data.x_test, data.y_test),
            "eval-acc": task.accuracy(weights, data.x_test, data.y_test),
            "num-examples": len(data.y_test),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Legacy workflows may ask a node for initial parameters."""
    return legacy_app(msg, context)
