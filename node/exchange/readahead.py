"""Iterate on a helper thread, a bounded number of items ahead of the consumer.

Both ends of a share are pipelines whose stages release the GIL (Parquet
decoding, compression, AES-GCM, gRPC), so running the producing stage on its
own thread lets it work while the consumer handles the previous item.

Invariants:

* at most ``depth`` items wait, so memory stays bounded whatever the source;
* an exception from the source is re-raised in the consumer, after the items
  produced before it;
* when the consumer stops early (an error, or closing the iterator), the
  helper stops at its next item and closes the source, so nothing keeps
  reading for a share that has ended.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], depth: int, name: str) -> Generator[T, None, None]:
    """Yield ``items`` in order, produced by a daemon thread called ``name``."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the consuming thread
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
