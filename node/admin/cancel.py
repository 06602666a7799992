"""Stopping a running operator command when the operator who started it goes away.

An admin call runs its command on a worker thread, so a Ctrl-C in the CLI (or
the node shutting down) ends the call but not the command. The admin service
marks the worker with an event that is set as soon as the call ends; a long
command asks :func:`check_cancelled` between steps (a share, between chunks)
and stops by raising :class:`CommandCancelledError`, undoing what it had not
finished the way any other failure does.

Invariant: a command that has finished its work before the call ended keeps
its result; cancellation only stops work still to be done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from node.errors import AdminError

__all__ = ["CommandCancelledError", "cancellable", "check_cancelled"]

_EVENT: ContextVar[threading.Event | None] = ContextVar("fednode_admin_cancel", default=None)


class CommandCancelledError(AdminError):
    """The operator's call ended (Ctrl-C, or the node is stopping) before the command did."""


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Let the commands run inside the block be stopped by setting ``event``."""
    token = _EVENT.set(event)
    try:
        yield
    finally:
        _EVENT.reset(token)


def check_cancelled() -> None:
    """Return if the running command may go on; outside an admin command, always.

    Raises:
        CommandCancelledError: its caller went away.
    """
    event = _EVENT.get()
    if event is not None and event.is_set():
        raise CommandCancelledError(
            "cancelled: the command's caller went away (Ctrl-C, or the node is stopping)",
            hint="nothing was kept; run the command again",
        )
