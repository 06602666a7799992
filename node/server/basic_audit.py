"""Minimal ledger wiring used until ``node.audit`` is installed in this build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.store import LedgerStore
from node.config import NodeConfig
from node.identity.directory import Directory
from node.server.handlers import Behavior, wrap_rpc_handler
from node.server.peer import caller_department


class StoreAudit:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def record(self, event: str, **fields: Any) -> int:
        clean = {k: v for k, v in fields.items() if v is not None}
        seq, _ = self.store.append({"event": event, **clean})
        return seq

    def close(self) -> None:
        self.store.close()


def open_audit(
    config: NodeConfig, signing_key: ed25519.Ed25519PrivateKey, directory: Callable[[], Directory]
) -> StoreAudit:
    return StoreAudit(LedgerStore(config.ledger_dir / "ledger.sqlite", config.department))


class AuditInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, audit: StoreAudit, *, surface: str) -> None:
        self._audit = audit
        self._surface = surface

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        method = details.method

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            def recorded(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    peer = caller_department(context)
                except Exception:  # noqa: BLE001
                    peer = "unknown"
                self._audit.record("rpc.start", peer=peer, detail={"method": method})
                outcome = "ok"
                try:
                    return behavior(request, context)
                except Exception:
                    outcome = "error"
                    raise
                finally:
                    self._audit.record(
                        "rpc.end", peer=peer, outcome=outcome, detail={"method": method}
                    )

            return recorded

        return wrap_rpc_handler(continuation(details), wrap)
