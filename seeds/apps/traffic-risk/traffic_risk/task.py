"""The model, its training and evaluation, and the data it reads.

The model is logistic regression over every numeric column except the label,
taken in sorted column order so that departments whose tables list columns in
a different order still agree on the meaning of each weight. Training is
full-batch gradient descent with L2 regularisation: deterministic, so the same
data and the same starting weights always give the same update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Column names of the synthetic departments' tables.
FEATURES = (
    "curvature",
    "darkness",
    "density",
    "rain_mm",
    "speed_excess",
    "visibility",
)
LABEL = "incident"
_TRUE_WEIGHTS = np.array([2.4, -2.0, 2.8, 2.2, 3.0, -2.6])
_TRUE_BIAS = -0.4
L2 = 1e-3
#: Every fifth row (by position) is held out for evaluation.
HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class Split:
    """Training and held-out rows of one node's table."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def table_to_xy(table: pa.Table, label: str = LABEL) -> tuple[np.ndarray, np.ndarray]:
    """Features (sorted numeric columns except ``label``) and labels of a table."""
    names = sorted(
        n for n in table.column_names if n != label and pa.types.is_floating(table[n].type)
    )
    x = np.column_stack([pc.fill_null(table[n], 0.0).to_numpy() for n in names])
    y = table[label].to_numpy().astype(np.float64)
    return x.astype(np.float64), y


def split(x: np.ndarray, y: np.ndarray) -> Split:
    """Hold out every ``HOLDOUT_EVERY``-th row."""
    test = np.arange(len(y)) % HOLDOUT_EVERY == 0
    return Split(x[~test], y[~test], x[test], y[test])


def load_split(path: str, label: str = LABEL) -> Split:
    """Read a node's Parquet file and split it."""
    return split(*table_to_xy(pq.read_table(path), label))


def synthetic_table(department: int, rows: int = 400, seed: int = 7) -> pa.Table:
    """A department's synthetic incident table.

    Each department observes wide variation in only two of the six risk factors
    (its roads differ in those) and little in the others, so a model trained on
    one department alone cannot learn the weights of the factors it rarely sees.
    Together the departments cover every factor.
    """
    rng = np.random.default_rng([seed, department])
    scale = np.full(len(FEATURES), 0.08)
    strong = [(2 * department) % len(FEATURES), (2 * department + 1) % len(FEATURES)]
    scale[strong] = 1.0
    x = rng.normal(0.0, 1.0, size=(rows, len(FEATURES))) * scale
    logits = x @ _TRUE_WEIGHTS + _TRUE_BIAS
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    columns = {name: x[:, i] for i, name in enumerate(FEATURES)}
    columns[LABEL] = y
    return pa.table(columns)


def synthetic_split(partition: int) -> Split:
    """The held-out split of a synthetic department (for simulation runs)."""
    return split(*table_to_xy(synthetic_table(partition)))


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
    w = weights[0].astype(np.float64).copy()
    b = weights[1].astype(np.float64).copy()
    n = max(len(y), 1)
    for _ in range(epochs):
        err = _sigmoid(x @ w + b[0]) - y
        w -= lr * (x.T @ err / n + L2 * w)
        b -= lr * np.array([err.mean()])
    return [w, b]
