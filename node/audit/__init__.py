"""Node-side audit ledger: the recorder behind ``runtime.audit``, the RPC interceptor,
the Ledger gRPC service, checkpoint publication with witnesses, and operator commands.

The server wires it in with::

    audit = open_audit(config, signing_key, lambda: directories.current)
    grpc.server(..., interceptors=[AuditInterceptor(audit, surface="network"), ...])
    node.audit.service.add_services(server, runtime)      # via SERVICE_MODULES
    import node.audit.admin                                # via HANDLER_MODULES
"""

from __future__ import annotations

from node.audit.interceptor import AuditInterceptor
from node.audit.recorder import AuditRecorder, ledger_path, open_audit

__all__ = ["AuditInterceptor", "AuditRecorder", "ledger_path", "open_audit"]
