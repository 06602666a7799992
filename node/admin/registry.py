"""Operator commands served on the admin socket, registered by name.

A subsystem declares a command with :func:`admin_command`; the module holding
it is listed in :data:`HANDLER_MODULES` so the server imports it at start-up.
Handlers receive the runtime, the JSON arguments, and an ``emit`` callback
that streams progress events to the operator's terminal. They return the
result object or raise a ``NodeError``/``LedgerError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["HANDLER_MODULES", "AdminHandler", "Emit", "admin_command", "handlers", "load_handlers"]

Emit = Callable[[dict[str, Any]], None]
AdminHandler = Callable[["NodeRuntime", dict[str, Any], Emit], dict[str, Any]]

#: Modules whose import registers admin commands.
HANDLER_MODULES: tuple[str, ...] = (
    "node.admin.builtin",
    "node.catalog.admin",
    "node.agreements.admin",
    "node.exchange.admin",
    "node.audit.admin",
    "node.fl.admin",
)

_HANDLERS: dict[str, AdminHandler] = {}


def admin_command(name: str) -> Callable[[AdminHandler], AdminHandler]:
    """Register ``fn`` as the handler of admin command ``name``."""

    def register(fn: AdminHandler) -> AdminHandler:
        if name in _HANDLERS and _HANDLERS[name] is not fn:
            raise RuntimeError(f"admin command {name!r} registered twice")
        _HANDLERS[name] = fn
        return fn

    return register


def load_handlers() -> dict[str, AdminHandler]:
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    return dict(_HANDLERS)


def handlers() -> dict[str, AdminHandler]:
    return dict(_HANDLERS)
