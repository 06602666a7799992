"""The slice of the node runtime that federated learning uses.

Written as Protocols so that the subsystem states exactly what it needs from
``node.runtime.NodeRuntime`` (which satisfies them structurally), and so that
unit tests can pass small fakes with the same shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import grpc

__all__ = ["Audit", "FlConfig", "FlRuntime"]


class Audit(Protocol):
    """The node's ledger writer; ``record`` returns once the entry is durable."""

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
    ) -> int: ...


class FlConfig(Protocol):
    @property
    def home(self) -> Path: ...
    @property
    def department(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...


class FlRuntime(Protocol):
    @property
    def config(self) -> FlConfig: ...
    @property
    def audit(self) -> Audit: ...
    def peer_channel(self, department: str) -> grpc.Channel: ...
