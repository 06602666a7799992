"""Admission control on the network port: only current directory members get in.

The TLS handshake already proved the peer holds a certificate from the
federation CA that has not expired. This interceptor adds what TLS alone
cannot know:

* the certificate names this node's federation;
* the department is listed in the current directory;
* the certificate is the one the directory pins for that department, and it
  is not on the directory's revocation list.

A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and a short
public message; the full reason goes to the local log. The audit interceptor
runs outside this one, so refusals are recorded too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from node.errors import CertificateError
from node.identity import certs
from node.identity.directory import Directory
from node.server.handlers import Behavior, wrap_rpc_handler
from node.server.peer import caller_certificate

__all__ = ["AdmissionInterceptor", "admit"]

log = logging.getLogger("fednode.authz")

# Health checks carry no data; load balancers and probes may call them with any CA-issued cert.
_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def _refuse(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("ServicerContext.abort returned")  # it always raises


def admit(context: grpc.ServicerContext, directory: Directory, federation: str) -> str:
    """Return the caller's department if the directory admits it, else abort the call."""
    cert = caller_certificate(context)
    if cert is None:
        _refuse(context, grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    try:
        peer_federation, department = certs.identity_of(cert)
    except CertificateError as e:
        log.warning("refused peer: %s", e)
        _refuse(
            context, grpc.StatusCode.UNAUTHENTICATED, "certificate has no valid fednode identity"
        )
    fp = certs.fingerprint(cert)
    if peer_federation != federation:
        log.warning("refused peer %s: federation %s", department, peer_federation)
        _refuse(
            context, grpc.StatusCode.PERMISSION_DENIED, f"not a member of federation {federation}"
        )
    revocation = directory.revocation_for(fp)
    if revocation is not None:
        log.warning("refused revoked certificate of %s (%s)", department, fp)
        _refuse(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate of {department} was revoked (directory serial {directory.serial})",
        )
    entry = directory.entries.get(department)
    if entry is None:
        log.warning("refused %s: not in directory serial %d", department, directory.serial)
        _refuse(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            f"department {department} is not in federation directory serial {directory.serial}",
        )
    if entry.tls_fingerprint != fp:
        log.warning(
            "refused %s: certificate %s is not the pinned %s", department, fp, entry.tls_fingerprint
        )
        _refuse(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate of {department} is not the one in directory serial {directory.serial}",
        )
    return department


class AdmissionInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every RPC from a peer the current directory does not admit."""

    def __init__(self, directory: Callable[[], Directory], federation: str) -> None:
        self._directory = directory
        self._federation = federation

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler_call_details.method in _OPEN_METHODS:
            return handler

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            def admitted(request: Any, context: grpc.ServicerContext) -> Any:
                admit(context, self._directory(), self._federation)
                return behavior(request, context)

            return admitted

        return wrap_rpc_handler(handler, wrap)
