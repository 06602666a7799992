"""The Admin gRPC service: runs a named operator command and streams its events.

The service is bound only to the node's Unix socket (mode 0600), so whoever
can call it is the node's local operator. Failures are reported in full
(kind, message, hint) because the operator is trusted with the details; the
network port never exposes this service.

Invariants: every call ends with exactly one ``result`` or ``failure`` event,
or with CANCELLED when its caller left. A request the service cannot use (an
unknown command, arguments that are not a JSON object, a missing argument)
ends with INVALID_ARGUMENT and a one-line message naming what was wrong; an
unexpected error in a command ends with INTERNAL and a message that names the
command and points at the node's log, never with the exception's own text.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ledger.errors import LedgerError
from node.admin.args import ArgumentError, parse_args
from node.admin.cancel import cancellable
from node.admin.registry import AdminHandler
from node.audit.actor import acting_as
from node.errors import AccessDenied, AdminError, NodeError, brief
from node.runtime import NodeRuntime
from node.server.peer import OPERATOR
from protocols.fednode.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AdminService"]

log = logging.getLogger("fednode.admin")

_DONE = object()
#: How often a command's event relay checks that its caller is still there.
_POLL_S = 0.5


class _InternalError(AdminError):
    """A command failed with an error that is not part of the public tree: a bug."""


def _internal(command: str, error: BaseException) -> _InternalError:
    """The error the operator sees for an unexpected exception: the log has the traceback."""
    return _InternalError(
        f"{command} failed with an internal error ({type(error).__name__})",
        hint="the node's log has the details; if the arguments were right, please report it",
    )


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=str, ensure_ascii=False).encode()


def _public_kind(error: BaseException) -> str:
    """The nearest class of ``error`` in ``node.errors`` or ``ledger.errors``.

    Subsystems subclass the public errors; the CLI maps only the public tree to
    exit codes, so the kind sent is the closest ancestor it knows.
    """
    for cls in type(error).__mro__:
        if cls.__module__ in ("node.errors", "ledger.errors"):
            return cls.__name__
    return type(error).__name__


def _status_of(error: BaseException) -> grpc.StatusCode:
    """The status a failed command ends its call with: refusals are ``PERMISSION_DENIED``."""
    if isinstance(error, AccessDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(error, ArgumentError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, _InternalError):
        return grpc.StatusCode.INTERNAL
    if isinstance(error, NodeError | LedgerError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def _failure_event(error: BaseException) -> admin_pb2.AdminEvent:
    return admin_pb2.AdminEvent(
        failure=admin_pb2.AdminFailure(
            kind=_public_kind(error),
            message=str(error),
            hint=getattr(error, "hint", None) or "",
        )
    )


class AdminService(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    def __init__(self, runtime: NodeRuntime, handlers: dict[str, AdminHandler]) -> None:
        self._runtime = runtime
        self._handlers = handlers

    def Invoke(  # noqa: N802 -- the gRPC method name
        self, request: admin_pb2.AdminCall, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.AdminEvent]:
        handler = self._handlers.get(request.command)
        if handler is None:
            yield _failure_event(
                ArgumentError(
                    f"unknown admin command {brief(request.command, 64)}",
                    hint="this node's fednode version may be older than the CLI's",
                )
            )
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            return
        try:
            args = parse_args(request.args_json)
        except ArgumentError as e:
            yield _failure_event(e)
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            return
        events: queue.Queue[object] = queue.Queue()
        outcome: dict[str, Any] = {}
        # Set when the call ends for any reason; a command still running then
        # was abandoned by its caller, and stops at its next check.
        ended = threading.Event()
        if not context.add_callback(ended.set):
            ended.set()  # the call ended already: gRPC will not run the callback

        def run() -> None:
            try:
                # Whoever can reach the admin socket is the node's operator.
                with acting_as(OPERATOR), cancellable(ended):
                    outcome["result"] = handler(
                        self._runtime,
                        args,
                        lambda ev: events.put(admin_pb2.AdminEvent(progress_json=_json(ev))),
                    )
            except (NodeError, LedgerError) as e:
                outcome["error"] = e
            except BaseException as e:  # a bug; the operator still gets one line
                # BaseException too: a command that calls sys.exit() has not succeeded.
                log.exception("admin command %s failed", request.command)
                outcome["error"] = _internal(request.command, e)
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=run, name=f"admin-{request.command}", daemon=True)
        worker.start()
        while True:
            try:
                item = events.get(timeout=_POLL_S)
            except queue.Empty:
                item = None
            if item is _DONE:
                break
            if not context.is_active():
                # The operator went away (Ctrl-C), or the node is stopping. The command
                # stops at its next check_cancelled() (node.admin.cancel); relaying its
                # events would only hold this server thread, and with it the node's exit.
                context.set_code(grpc.StatusCode.CANCELLED)
                return
            if item is not None:
                assert isinstance(item, admin_pb2.AdminEvent)
                yield item
        error = outcome.get("error")
        if error is not None:
            yield _failure_event(error)
            # The call's status carries the outcome too, so the ledger's rpc.finished
            # entry says the command failed (the event above says how).
            context.set_code(_status_of(error))
            context.set_details(f"{request.command} failed")
        else:
            yield admin_pb2.AdminEvent(result_json=_json(outcome.get("result") or {}))
