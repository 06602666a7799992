"""Record every RPC in the ledger: once before the handler runs, once in ``finally``.

The interceptor sits first on both servers, so even calls that admission
refuses are recorded. For a response stream the second record is written when
the stream ends (exhausted, failed or cancelled), not when the handler returns
its iterator. The recorded outcome comes from the status code the call ended
with: ``ok``, ``denied`` (PERMISSION_DENIED, UNAUTHENTICATED), ``cancelled``
(the client cancelled, or left a response stream before its end) or ``error``.

On the admin socket both entries also name the command run (``share.fetch``,
``agreement.revoke``, ...); a command that fails ends its call with an error
status, so its ``rpc.finished`` says so.

A unary call whose client went away (cancelled, or its deadline passed)
while the handler ran is recorded as ``cancelled``, not ``ok``: its response
was never delivered.

A call that cannot be recorded does not run: if ``rpc.started`` cannot be
written the call ends with UNAVAILABLE before the handler, and if
``rpc.finished`` cannot be written the caller gets UNAVAILABLE instead of the
result. The caller is told only that; the ledger's error goes to the log.

Who called comes only from the verified client certificate
(:func:`node.server.peer.caller_identity`); a certificate naming another
federation is recorded without a peer, so it is never mistaken for this
federation's department of the same name. On the admin socket the actor is
the local operator. Handlers never write these access records themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc

from node.errors import NodeError, brief
from node.runtime import AuditSink
from node.server.handlers import Behavior, wrap_rpc_handler
from node.server.peer import OPERATOR, caller_identity

__all__ = ["UNRECORDED_MESSAGE", "AuditInterceptor"]

log = logging.getLogger("fednode.audit")

#: What a caller is told when its call cannot be recorded; the log has the cause.
UNRECORDED_MESSAGE = "the node cannot record calls at the moment; try again later"
_DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
#: Admin command names are short (``share.fetch``); an unknown one is recorded cut to this.
_MAX_COMMAND = 64


def _abort(context: grpc.ServicerContext) -> NoReturn:
    # The ledger's own error (a full disk, a closed store) is not the caller's business.
    context.abort(grpc.StatusCode.UNAVAILABLE, UNRECORDED_MESSAGE)
    raise AssertionError("ServicerContext.abort returned")


def _outcome(code: grpc.StatusCode | None, raised: bool) -> tuple[str, str]:
    if code is None:
        code = grpc.StatusCode.UNKNOWN if raised else grpc.StatusCode.OK
    if code == grpc.StatusCode.OK:
        return "ok", code.name
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled", code.name
    return ("denied" if code in _DENIED else "error"), code.name


def _status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except AttributeError:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _call_detail(method: str, surface: str, request: Any) -> dict[str, object]:
    """What both entries of a call record: the method, and on the admin socket the command run."""
    detail: dict[str, object] = {"method": method, "surface": surface}
    command = getattr(request, "command", None) if surface == "admin" else None
    if isinstance(command, str):
        detail["command"] = command[:_MAX_COMMAND]
    return detail


class AuditInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A server interceptor writing ``rpc.started`` and ``rpc.finished`` entries."""

    def __init__(self, audit: AuditSink, *, surface: str, federation: str | None = None) -> None:
        """Record calls on ``surface`` ("network" or "admin") into ``audit``.

        With ``federation``, a caller whose certificate names another
        federation is recorded without a peer.
        """
        self._audit = audit
        self._surface = surface
        self._federation = federation

    def _who(self, context: grpc.ServicerContext) -> tuple[str | None, str | None, str | None]:
        """Return (actor, peer, problem)."""
        if self._surface == "admin":
            return OPERATOR, None, None
        try:
            federation, department = caller_identity(context)
        except NodeError as e:
            return None, None, str(e)
        if self._federation is not None and federation != self._federation:
            return None, None, f"certificate of federation {brief(federation)}"
        return None, department, None

    def intercept_service(
        self, continuation: Any, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        audit = self._audit
        surface = self._surface

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            def started(
                request: Any, context: grpc.ServicerContext
            ) -> tuple[str | None, str | None, dict[str, object]]:
                actor, peer, problem = self._who(context)
                base = _call_detail(method, surface, request)
                detail = dict(base)
                if problem is not None:
                    detail["caller_problem"] = problem
                try:
                    audit.record("rpc.started", actor=actor, peer=peer, detail=detail)
                except Exception:
                    # No record, no call. Whatever the ledger raised, the log has it.
                    log.exception("cannot record the start of %s; call refused", method)
                    _abort(context)
                return actor, peer, base

            def finished(
                context: grpc.ServicerContext,
                call: tuple[str | None, str | None, dict[str, object]],
                raised: bool,
                *,
                cancelled: bool = False,
            ) -> None:
                actor, peer, base = call
                status = grpc.StatusCode.CANCELLED if cancelled else _status_code(context)
                outcome, code = _outcome(status, raised)
                try:
                    audit.record(
                        "rpc.finished",
                        actor=actor,
                        peer=peer,
                        outcome=outcome,
                        detail={**base, "code": code},
                    )
                except Exception:
                    log.exception("cannot record the end of %s", method)
                    if not cancelled:
                        # The caller is still there: it must not take the result as recorded.
                        _abort(context)

            if not streaming:

                def unary(request: Any, context: grpc.ServicerContext) -> Any:
                    call = started(request, context)
                    raised = True
                    try:
                        response = behavior(request, context)
                        raised = False
                        return response
                    finally:
                        # A call its client left while the handler ran delivers nothing.
                        left = not raised and _status_code(context) is None
                        finished(context, call, raised, cancelled=left and not context.is_active())

                return unary

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = started(request, context)
                try:
                    yield from behavior(request, context)
                except GeneratorExit:
                    # The client went away (cancelled, or stopped reading after what it
                    # needed) and gRPC closed the generator: nothing failed here.
                    finished(context, call, True, cancelled=True)
                    raise
                except BaseException:
                    finished(context, call, True)
                    raise
                finished(context, call, False)

            return stream

        return wrap_rpc_handler(continuation(details), wrap)
