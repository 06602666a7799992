"""The slice of the node runtime that federated learning uses.

Written as Protocols so that the subsystem states exactly what it needs from
``node.runtime.NodeRuntime`` (which satisfies them structurally), and so that
unit tests can pass small fakes with the same shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import grpc

from node.runtime import AuditSink

__all__ = ["FlConfig", "FlRuntime"]


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
    def audit(self) -> AuditSink: ...
    def peer_channel(self, department: str) -> grpc.Channel: ...
