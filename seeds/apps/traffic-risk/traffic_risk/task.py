"""The model, its training and evaluation, and the data it reads.

The model is logistic regression over every floating-point column except the
label, taken in sorted column order so that departments whose tables list
columns in a different order still agree on the meaning of each weight.
Training is full-batch gradient descent with L2 regularisation: deterministic,
so the same data and the same starting weights always give the same update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Feature columns of the seed ``road_safety`` tables (and of the synthetic partitions).
FEATURES = (
    "night",
    "rush_hour",
    "weekend",
    "flow_index",
    "heavy_vehicle_share",
    "speed_index",
    "pedestrian_index",
    "rain_index",
    "cycle_index",
    "elderly_share",
    "violation_index",
)
LABEL = "incident"
SPLIT = "split"
L2 = 1e-3
#: Without a split column, every fifth row (by position) is held out.
HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class Split:
    """Training and held-out rows of one node's table."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split_table(table: pa.Table, label: str = LABEL, split: str = SPLIT) -> Split:
    """Features (sorted float columns except ``label``), labels, and the held-out split."""
    names = sorted(
        n for n in table.column_names if n != label and pa.types.is_floating(table[n].type)
    )
    x = np.column_stack([pc.fill_null(table[n], 0.0).to_numpy() for n in names]).astype(float)
    y = table[label].to_numpy().astype(np.float64)
    if split in table.column_names:
        test = np.asarray(pc.equal(table[split], "test").to_numpy(zero_copy_only=False), bool)
    else:
        test = np.arange(len(y)) % HOLDOUT_EVERY == 0
    return Split(x[~test], y[~test], x[test], y[test])


def load_split(path: str, label: str = LABEL, split: str = SPLIT) -> Split:
    """Read a node's Parquet file and split it."""
    return split_table(pq.read_table(path), label, split)


def synthetic_table(partition: int, rows: int = 500, seed: int = 7) -> pa.Table:
    """A synthetic partition for simulation runs: each sees two factors vary widely."""
    rng = np.random.default_rng([seed, partition])
    weights = np.linspace(-3.0, 3.0, len(FEATURES))
    scale = np.full(len(FEATURES), 0.08)
    scale[[(2 * partition) % len(FEATURES), (2 * partition + 1) % len(FEATURES)]] = 1.0
    x = rng.normal(0.0, 1.0, size=(rows, len(FEATURES))) * scale
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(x @ weights)))).astype(np.int8)
    return pa.table({**{n: x[:, i] for i, n in enumerate(FEATURES)}, LABEL: y})


def initial_weights(num_features: int) -> list[np.ndarray]:
    """Zero weights and bias."""
    return [np.zeros(num_features), np.zeros(1)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def loss(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = _sigmoid(x @ weights[0] + weights[1][0])
    eps = 1e-12
    return float(-np.mean(y * np.log(p + eps) + (1.0 - y) * np.log(1.0 - p + eps)))


def accuracy(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose label the model predicts at threshold 0.5."""
    p = _sigmoid(x @ weights[0] + weights[1][0])
    return float(np.mean((p >= 0.5) == (y >= 0.5)))


def train(
    weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float
) -> list[np.ndarray]:
    """Full-batch gradient descent from ``weights``; returns new arrays."""
    w = np.asarray(weights[0], dtype=np.float64).copy()
    b = np.asarray(weights[1], dtype=np.float64).copy()
    n = max(len(y), 1)
    for _ in range(epochs):
        err = _sigmoid(x @ w + b[0]) - y
        w -= lr * (x.T @ err / n + L2 * w)
        b -= lr * np.array([err.mean()])
    return [w, b]
