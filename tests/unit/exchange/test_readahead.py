"""Bounded read-ahead on a helper thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from node.exchange.readahead import read_ahead


def test_items_arrive_in_order() -> None:
    assert list(read_ahead(iter(range(1000)), 3, "test")) == list(range(1000))


def test_the_source_runs_at_most_depth_ahead() -> None:
    produced: list[int] = []
    waiting = threading.Event()

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            if i == 10:
                waiting.set()
            yield i

    items = read_ahead(source(), 2, "test")
    assert next(items) == 0
    # The helper fills the two slots and then blocks holding one more item.
    assert not waiting.wait(0.5)
    assert len(produced) <= 1 + 2 + 1
    items.close()


def test_a_source_error_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("disk read failed")

    got: list[int] = []
    with pytest.raises(ValueError, match="disk read failed"):
        for item in read_ahead(source(), 4, "test"):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = read_ahead(source(), 2, "test")
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert closed.wait(5), "the helper never closed the source"
