"""Calling the local node's admin socket from the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

import ledger.errors as ledger_errors
import node.errors as node_errors
from ledger.errors import LedgerError
from node.config import CONFIG_FILE
from node.errors import AdminError, NodeError
from node.interrupt import interrupted, on_interrupt
from protocols.fednode.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["invoke", "is_running"]

SOCKET_NAME = "admin.sock"


def _target(home: Path) -> str:
    return f"unix:{(home / SOCKET_NAME).resolve()}"


def is_running(home: Path) -> bool:
    """Whether a node answers on ``home``'s admin socket."""
    if not (home / SOCKET_NAME).exists():
        return False
    with grpc.insecure_channel(_target(home)) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=2)
        except grpc.FutureTimeoutError:
            return False
    return True


def _error_from(failure: admin_pb2.AdminFailure) -> NodeError | LedgerError:
    node_kind = getattr(node_errors, failure.kind, None)
    if isinstance(node_kind, type) and issubclass(node_kind, NodeError):
        return node_kind(failure.message, hint=failure.hint or None)
    ledger_kind = getattr(ledger_errors, failure.kind, None)
    if isinstance(ledger_kind, type) and issubclass(ledger_kind, LedgerError):
        error = ledger_kind(failure.message)
        error.hint = failure.hint or None  # type: ignore[attr-defined]
        return error
    return AdminError(failure.message, hint=failure.hint or None)


def _not_running(home: Path) -> AdminError:
    """The error for a home without an admin socket, telling a stopped node from a wrong --home.

    Advising 'fednode serve' for a folder that holds no node would only lead
    to a second error, so that advice is given only when node.toml is there.
    """
    if not (home / CONFIG_FILE).exists():
        return AdminError(
            f"no node in {home} (no {CONFIG_FILE})",
            hint="--home (or $FEDNODE_HOME) probably names the wrong folder; "
            f"to create a node there, run 'fednode init --home {home} --federation ID "
            "--department ID'",
        )
    return AdminError(
        f"no running node in {home} (no {SOCKET_NAME})",
        hint=f"start it with 'fednode serve --home {home}'",
    )


def invoke(
    home: Path,
    command: str,
    args: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run admin ``command`` on the node in ``home`` and return its result.

    Raises:
        AdminError: no node is running in ``home``, or the call failed in transport.
        NodeError: the command failed; the node's error kind is preserved where known.
    """
    socket_path = home / SOCKET_NAME
    if not socket_path.exists():
        raise _not_running(home)
    result: dict[str, Any] | None = None
    failure: NodeError | LedgerError | None = None
    with grpc.insecure_channel(_target(home)) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        call = stub.Invoke(
            admin_pb2.AdminCall(command=command, args_json=json.dumps(args).encode()),
            timeout=timeout,
        )
        try:
            # Read to the end of the stream, past the result or failure: leaving
            # early would cancel the call, which the node's ledger would record.
            # Ctrl-C cancels it, so the node stops the command too (node.admin.cancel).
            with on_interrupt(call.cancel):
                for event in call:
                    which = event.WhichOneof("event")
                    if which == "progress_json":
                        if on_event is not None:
                            on_event(json.loads(event.progress_json))
                    elif which == "result_json":
                        result = json.loads(event.result_json)
                    elif which == "failure":
                        failure = _error_from(event.failure)
        except grpc.RpcError as e:
            if interrupted():
                # Cancelled by Ctrl-C, even if the KeyboardInterrupt itself was lost.
                raise KeyboardInterrupt from None
            if failure is not None:
                # The node ends a failed command's call with an error status too.
                raise failure from None
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise AdminError(
                    f"the node in {home} is not answering on its admin socket",
                    hint=f"check that 'fednode serve --home {home}' is running",
                ) from e
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # Either way across the socket: the request, or the command's result.
                raise AdminError(
                    f"admin call {command} failed: a message was larger than the "
                    f"admin socket's 4 MiB limit ({e.details()})",
                    hint="pass large inputs as a file the node can read, and narrow "
                    "what a command returns (filters, --out)",
                ) from e
            # One line: the RpcError's own text spans several, with gRPC's debug string.
            name = code.name if code is not None else "UNKNOWN"
            details = e.details() if hasattr(e, "details") else None
            raise AdminError(
                f"admin call {command} failed: {name}: {details or 'no details'}"
            ) from e
    if failure is not None:
        raise failure
    if result is None:
        raise AdminError(f"admin call {command} ended without a result")
    return result
