"""ClientApp: trains and evaluates on this node's data only."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from traffic_risk import task

app = ClientApp()


def _data(context: Context) -> task.Split:
    label = str(context.run_config.get("label-column", task.LABEL))
    path = context.node_config.get("data-path")
    if isinstance(path, str) and path:
        return task.load_split(path, label)
    # Simulation: no data path, so use the synthetic department of this partition.
    return task.synthetic_split(int(context.node_config.get("partition-id", 0)))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run local epochs from the received global model."""
    data = _data(context)
    weights = msg.content["arrays"].to_numpy_ndarrays()
    new = task.train(
        weights,
        data.x_train,
        data.y_train,
        epochs=int(context.run_config["local-epochs"]),
        lr=float(context.run_config["learning-rate"]),
    )
    metrics = MetricRecord(
        {
            "train-loss": task.loss(new, data.x_train, data.y_train),
            "num-examples": len(data.y_train),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(new), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this node's held-out rows."""
    data = _data(context)
    weights = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord(
        {
            "eval-loss": task.loss(weights, data.x_test, data.y_test),
            "eval-acc": task.accuracy(weights, data.x_test, data.y_test),
            "num-examples": len(data.y_test),
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
