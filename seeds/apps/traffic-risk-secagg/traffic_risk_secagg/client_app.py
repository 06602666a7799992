"""ClientApp: a NumPyClient (Flower's legacy client API) over this node's data."""

from __future__ import annotations

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from traffic_risk_secagg import task


class RiskClient(NumPyClient):  # type: ignore[misc]
    def __init__(self, context: Context) -> None:
        label = str(context.run_config["label-column"])
        self.data = task.load(str(context.node_config["data-path"]), label)
        self.epochs = int(context.run_config["local-epochs"])
        self.lr = float(context.run_config["learning-rate"])

    def get_parameters(self, config: dict[str, object]) -> list[np.ndarray]:
        return [np.zeros(task.NUM_FEATURES), np.zeros(1)]

    def fit(self, parameters: list[np.ndarray], config: dict[str, object]) -> tuple[list[np.ndarray], int, dict[str, float]]:
        x, y, _, _ = self.data
        new = task.train(parameters, x, y, self.epochs, self.lr)
        return new, len(y), {"train-loss": task.evaluate(new, x, y)[0]}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, object]) -> tuple[float, int, dict[str, float]]:
        _, _, x, y = self.data
        loss, acc = task.evaluate(parameters, x, y)
        return loss, len(y), {"eval-acc": acc}


def client_fn(context: Context):  # noqa: ANN201 -- Flower's client_fn signature
    return RiskClient(context).to_client()


app = ClientApp(client_fn=client_fn)
