"""The running node's shared state, handed to every service and admin command.

One :class:`NodeRuntime` exists per ``fednode serve`` process. Subsystems keep
their own state in :attr:`NodeRuntime.extensions` under their own key, so
this module does not grow with every subsystem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.config import NodeConfig
from node.identity.directory import Directory, DirectoryHolder
from node.identity.keys import HpkeKeyPair
from node.peers import PeerConnector

__all__ = ["AuditSink", "NodeRuntime"]


class AuditSink(Protocol):
    """Where the node records decisions and accesses: the audit ledger."""

    def record(
        self,
        event: str,
        *,
        actor: str | None = None,
        peer: str | None = None,
        agreement: str | None = None,
        dataset: str | None = None,
        columns: list[str] | None = None,
        purpose: str | None = None,
        digest: str | None = None,
        outcome: str = "ok",
        detail: dict[str, object] | None = None,
        sensitive: Iterable[str] = (),
    ) -> int:
        """Append one entry and return its sequence number once it is durable.

        ``actor`` is who acted locally; left out, it is the operator inside an
        admin command (:mod:`node.audit.actor`) and nobody otherwise, since a
        peer's request names the peer in ``peer``.

        ``sensitive`` names fields (such as ``detail.reason``) that enter the
        ledger only as salted commitments, so they can later be crypto-shredded.
        """
        ...


@dataclass
class NodeRuntime:
    config: NodeConfig
    signing_key: ed25519.Ed25519PrivateKey
    hpke: HpkeKeyPair
    directories: DirectoryHolder
    audit: AuditSink
    peers: PeerConnector
    extensions: dict[str, object] = field(default_factory=dict)

    @property
    def department(self) -> str:
        return self.config.department

    @property
    def directory(self) -> Directory:
        return self.directories.current

    def peer_channel(self, department: str) -> grpc.Channel:
        """An mTLS channel to ``department`` (see :class:`node.peers.PeerConnector`)."""
        return self.peers.channel(department)
