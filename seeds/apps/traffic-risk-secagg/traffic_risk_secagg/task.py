"""Logistic regression on a node's Parquet table (sorted float columns, minus the label).

Deterministic full-batch gradient descent, so the same data and starting
weights always give the same update.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

NUM_FEATURES = 6
L2 = 1e-3
HOLDOUT_EVERY = 5


def load(path: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); every fifth row is held out."""
    table = pq.read_table(path)
    names = sorted(
        n for n in table.column_names if n != label and pa.types.is_floating(table[n].type)
    )
    x = np.column_stack([pc.fill_null(table[n], 0.0).to_numpy() for n in names]).astype(float)
    y = table[label].to_numpy().astype(float)
    test = np.arange(len(y)) % HOLDOUT_EVERY == 0
    return x[~test], y[~test], x[test], y[test]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def train(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> list[np.ndarray]:
    w, b = weights[0].astype(float).copy(), weights[1].astype(float).copy()
    n = max(len(y), 1)
    for _ in range(epochs):
        err = _sigmoid(x @ w + b[0]) - y
        w -= lr * (x.T @ err / n + L2 * w)
        b -= lr * np.array([err.mean()])
    return [w, b]


def evaluate(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy)."""
    p = _sigmoid(x @ weights[0] + weights[1][0])
    eps = 1e-12
    loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    return loss, float(np.mean((p >= 0.5) == (y >= 0.5)))
