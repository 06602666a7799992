"""A stand-in runtime for agreement and catalog unit tests: real stores, a recording audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519


@dataclass
class RecordingAudit:
    """Implements the runtime's audit interface and keeps entries in a list."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(self, event: str, **fields: Any) -> int:
        self.entries.append({"event": event, **fields})
        return len(self.entries)


@dataclass
class Config:
    data_dir: Path
    department: str


@dataclass
class FakeRuntime:
    config: Config
    signing_key: ed25519.Ed25519PrivateKey
    audit: RecordingAudit = field(default_factory=RecordingAudit)
    extensions: dict[str, object] = field(default_factory=dict)

    @property
    def department(self) -> str:
        return self.config.department


@pytest.fixture
def provider_runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(Config(tmp_path / "health", "health"), ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
def consumer_runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(
        Config(tmp_path / "statistics", "statistics"), ed25519.Ed25519PrivateKey.generate()
    )
