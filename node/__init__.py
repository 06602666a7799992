"""fednode: the department node (identity, catalog, agreements, exchange, federated learning)."""

from __future__ import annotations

__version__ = "0.1.0"
