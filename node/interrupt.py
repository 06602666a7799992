"""Ctrl-C in a ``fednode`` command: never lost, and it reaches the node.

Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread
happens to be. Two things go wrong with that alone:

* the exception can land inside code that swallows it (a library import
  with a bare ``except``, a callback run from C), and the command then runs
  on as if nothing happened: a share the operator stopped keeps streaming;
* a command waiting on the node's admin call only stops waiting; the call
  must be cancelled for the node to stop the work (``node.admin.cancel``).

So while a command runs, SIGINT sets a flag and runs the registered hooks
(cancelling the admin call in flight) before it raises. Whoever waits on the
call sees it end and asks :func:`interrupted`; the CLI checks the flag once
more before it acts, so an interrupt swallowed during start-up still counts.

Invariant: the handler is installed only for the duration of
:func:`handling`, and the previous one is put back after it, so a test
runner or an embedding program keeps its own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["check", "handling", "interrupted", "on_interrupt"]

_flag = threading.Event()
_hooks: list[Callable[[], None]] = []


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _flag.set()
    for hook in list(_hooks):
        # A hook that fails must not stop the interrupt itself.
        with contextlib.suppress(Exception):
            hook()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Route SIGINT through the flag and hooks for the duration of the block.

    Outside the main thread (where no signal handler can be set) the block
    runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _flag.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _flag.clear()


def interrupted() -> bool:
    """Whether SIGINT arrived since :func:`handling` began."""
    return _flag.is_set()


def check() -> None:
    """Raise if SIGINT arrived, even if the ``KeyboardInterrupt`` was swallowed.

    Raises:
        KeyboardInterrupt: as above.
    """
    if _flag.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def on_interrupt(hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` on SIGINT while the block runs (at once if SIGINT came already)."""
    _hooks.append(hook)
    try:
        if _flag.is_set():
            hook()
        yield
    finally:
        _hooks.remove(hook)
