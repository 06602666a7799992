"""Make the seed generator importable: it lives in seeds/, outside the installed packages."""

from __future__ import annotations

import sys
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
if str(SEEDS) not in sys.path:
    sys.path.insert(0, str(SEEDS))
