"""Who is acting on this node, for the ledger's ``actor`` field.

``actor`` names who acted locally (``ledger/FORMAT.md``): the operator for
anything run from the admin socket, nobody for what a peer asked over the
network (the peer is in ``peer``). The admin service marks the thread that
runs a command, so every entry the command records names the operator
without each call site passing it along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["acting_as", "current_actor"]

_ACTOR: ContextVar[str | None] = ContextVar("fednode_actor", default=None)


def current_actor() -> str | None:
    """The local actor of the running command, or ``None`` outside one."""
    return _ACTOR.get()


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record ``actor`` as the local actor of every entry written inside the block."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)
