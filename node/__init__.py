"""fednode: the department node (identity, catalog, agreements, exchange, federated learning)."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# pyarrow's allocator (mimalloc) returns freed memory to the system after 10 ms
# by default, so each batch of a share faults its pages in again and the kernel
# zeroes them: measured, 12 times more page faults and about a tenth of the
# provider's CPU per share. Keeping freed memory for 5 s lets the next batch
# reuse it; an idle node still gives it back. mimalloc reads the setting when
# pyarrow loads, which is after this package, and an operator's value wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "5000")
