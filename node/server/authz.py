"""Admission control on the network port: only current directory members get in.

The TLS handshake already proved the peer holds a certificate from the
federation CA that has not expired. This interceptor adds what TLS alone
cannot know:

* the certificate names this node's federation;
* the department is listed in the current directory;
* the certificate is the one the directory pins for that department, and it
  is not on the directory's revocation list.

A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and a short
public message; the full reason goes to the local log and, as an
``access.denied`` entry naming the peer where its certificate names one, to
the ledger. The audit interceptor runs outside this one, so refusals also
have their ``rpc.started`` and ``rpc.finished``.

Invariants:

* only ``grpc.health.v1.Health/Check`` is open to any certificate the CA
  issued; everything else, a streaming health ``Watch`` and methods this node
  does not serve included, is admitted first, so a refused peer learns
  neither which methods exist nor holds a server thread open;
* a request message that does not parse is refused with INVALID_ARGUMENT
  after admission, inside the interceptors, so it is recorded like any call;
* an admitted call that fails with an exception the handler did not turn
  into a status ends with INTERNAL and a fixed public message; the
  exception's text, which may name files or SQL, stays in the local log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from cryptography import x509

from node.errors import CertificateError, brief
from node.identity import certs
from node.identity.directory import Directory
from node.runtime import AuditSink
from node.server.handlers import Behavior, wrap_rpc_handler
from node.server.peer import caller_certificate

__all__ = ["INTERNAL_MESSAGE", "AdmissionInterceptor", "Refusal", "admit", "check_admission"]

log = logging.getLogger("fednode.authz")

# A health check carries no data; load balancers and probes may call it with any
# CA-issued certificate. Watch is not open: each one holds a server thread for as
# long as the caller likes, so only admitted peers may open it.
_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
#: What a peer is told when a handler fails unexpectedly; the log has the rest.
INTERNAL_MESSAGE = "internal error on the serving node"


@dataclass(frozen=True)
class Refusal:
    """Why a caller is not admitted: the status, the public message, and the full local reason."""

    code: grpc.StatusCode
    message: str
    reason: str
    department: str | None = None


def check_admission(
    cert: x509.Certificate | None, directory: Directory, federation: str
) -> str | Refusal:
    """The caller's department if ``directory`` admits the holder of ``cert``, else why not."""
    if cert is None:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "a client certificate is required",
            "no verified client certificate",
        )
    try:
        peer_federation, department = certs.identity_of(cert)
    except CertificateError as e:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "certificate has no valid fednode identity",
            f"certificate has no fednode identity: {e}",
        )
    fp = certs.fingerprint(cert)
    if peer_federation != federation:
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"not a member of federation {federation}",
            f"certificate names federation {brief(peer_federation)}, not {federation}",
            # Not recorded as this federation's department of the same name.
            None,
        )
    if directory.revocation_for(fp) is not None:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate of {department} was revoked (directory serial {directory.serial})",
            f"certificate {fp} was revoked (directory serial {directory.serial})",
            department,
        )
    entry = directory.entries.get(department)
    if entry is None:
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"department {department} is not in federation directory serial {directory.serial}",
            f"not in directory serial {directory.serial}",
            department,
        )
    if entry.tls_fingerprint != fp:
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate of {department} is not the one in directory serial {directory.serial}",
            f"certificate {fp} is not the pinned {entry.tls_fingerprint}",
            department,
        )
    return department


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("ServicerContext.abort returned")  # it always raises


def admit(
    context: grpc.ServicerContext,
    directory: Directory,
    federation: str,
    audit: AuditSink | None = None,
    method: str = "",
) -> str:
    """Return the caller's department if the directory admits it, else abort the call.

    A refusal is logged and, with ``audit``, recorded as ``access.denied``.

    Raises:
        Exception: gRPC's abort, ending the call with the refusal's status.
    """
    verdict = check_admission(caller_certificate(context), directory, federation)
    if isinstance(verdict, str):
        return verdict
    log.warning("refused %s on %s: %s", verdict.department or "a peer", method, verdict.reason)
    if audit is not None:
        try:
            audit.record(
                "access.denied",
                peer=verdict.department,
                outcome="denied",
                detail={"method": method, "reason": verdict.reason, "code": verdict.code.name},
            )
        except Exception:  # refused either way; the peer sees only the refusal
            log.exception("cannot record the refusal of %s on %s", verdict.department, method)
    _abort(context, verdict.code, verdict.message)


def _sanitised(method: str, behavior: Behavior, streaming: bool) -> Behavior:
    """``behavior`` with unexpected exceptions turned into INTERNAL and a fixed message.

    Without this, gRPC sends a failed handler's exception text to the peer
    ("Exception calling application: ..."). A handler's own ``abort`` passes
    through unchanged: it has set the call's code already.
    """

    def settle(context: grpc.ServicerContext, error: Exception) -> NoReturn:
        if type(error) is Exception and _has_code(context):
            raise error  # ServicerContext.abort: the status is the handler's choice
        log.error("%s failed", method, exc_info=error)
        _abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    if not streaming:

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as e:  # noqa: BLE001 -- every failure reaches the peer sanitised
                settle(context, e)

        return unary

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as e:  # noqa: BLE001 -- every failure reaches the peer sanitised
            settle(context, e)

    return stream


def _has_code(context: grpc.ServicerContext) -> bool:
    try:
        return context.code() is not None
    except AttributeError:
        return False


def _unimplemented(request: Any, context: grpc.ServicerContext) -> Any:
    _abort(context, grpc.StatusCode.UNIMPLEMENTED, "method not served by this node")


#: The handler for a method no service serves: it is still admitted and recorded first.
_UNKNOWN_METHOD = grpc.stream_stream_rpc_method_handler(_unimplemented)


class AdmissionInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every RPC from a peer the current directory does not admit."""

    def __init__(
        self,
        directory: Callable[[], Directory],
        federation: str,
        audit: AuditSink | None = None,
    ) -> None:
        """Admit against ``directory()``, recording refusals in ``audit`` when given."""
        self._directory = directory
        self._federation = federation
        self._audit = audit

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None:
            handler = _UNKNOWN_METHOD
        # decode=True: a request that does not parse is refused inside the
        # interceptors, after admission, so the ledger records it too.
        if method in _OPEN_METHODS:
            return wrap_rpc_handler(handler, lambda b, s: _sanitised(method, b, s), decode=True)

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            inner = _sanitised(method, behavior, streaming)

            def admitted(request: Any, context: grpc.ServicerContext) -> Any:
                admit(context, self._directory(), self._federation, self._audit, method)
                return inner(request, context)

            return admitted

        return wrap_rpc_handler(handler, wrap, decode=True)
