"""A whole federation on one machine: for the demo, the tests and evaluation.

It runs the same steps a real federation does, only all in one folder and
all on loopback: the authority creates its CA, each department runs
``init``, the authority issues certificates and publishes the directory, and
each department installs it. Nodes run as separate ``fednode serve``
processes. Nothing here bypasses a check the production path makes.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.admin.client import invoke, is_running
from node.config import load_config
from node.errors import NodeError
from node.identity.authority import Authority
from node.identity.directory import install_directory_file
from node.identity.home import init_home

__all__ = ["DepartmentSpec", "LocalFederation", "free_port", "provision"]


@dataclass(frozen=True)
class DepartmentSpec:
    department: str
    display_name: str = ""
    witness: bool = True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _inherited_env() -> dict[str, str]:
    """This process's environment for a node, less what Flower's import put in it.

    Importing Flower sets ``GRPC_VERBOSITY=error`` when it is unset, which would
    silence the node's TLS handshake failures (node/native_log.py); a node
    started here gets gRPC's own default, as one started by an operator does.
    """
    return {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}


@dataclass
class LocalFederation:
    """A provisioned federation in ``root``: the authority folder and one home per department."""

    root: Path
    federation: str
    authority: Authority
    homes: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ca_pem(self) -> Path:
        return self.authority.cert_path

    def publish(self, *, witness_threshold: int | None = None, days: int = 30) -> bytes:
        """Publish a new directory and install it into every home (running or not)."""
        data = self.authority.publish_directory(
            validity_days=days, witness_threshold=witness_threshold
        )
        (self.root / "directory.json").write_bytes(data)
        for department in self.homes:
            self.install_directory(department, data)
        return data

    def install_directory(self, department: str, data: bytes) -> None:
        home = self.homes[department]
        if department in self.processes and is_running(home):
            invoke(home, "directory.install", {"directory_b64": base64.b64encode(data).decode()})
            return
        config = load_config(home)
        install_directory_file(
            config.directory_path,
            config.directory_state_path,
            data,
            self.authority.ca_certificate(),
        )

    def start(
        self, department: str, *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``fednode serve`` for ``department`` as its own process."""
        home = self.homes[department]
        log = (home / "node.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "serve", "--home", str(home)],
            stdout=log,
            stderr=log,
            env={**_inherited_env(), **(env or {})},
            start_new_session=True,
        )
        log.close()
        self.processes[department] = process
        return process

    def wait_ready(self, departments: list[str] | None = None, timeout: float = 30.0) -> None:
        """Wait until each node answers on its admin socket.

        Raises:
            NodeError: a node exited or did not become ready in time; the message
                holds the tail of its log.
        """
        deadline = time.monotonic() + timeout
        for department in departments or list(self.processes):
            process = self.processes[department]
            home = self.homes[department]
            while not is_running(home):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (home / "node.log").read_text(errors="replace")[-2000:]
                    raise NodeError(f"node {department} did not start:\n{tail}")
                time.sleep(0.1)

    def stop(self, department: str, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        process = self.processes.pop(department)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return int(process.returncode)

    def stop_all(self) -> None:
        for department in list(self.processes):
            self.stop(department)


def provision(
    root: Path,
    federation: str,
    departments: list[DepartmentSpec],
    *,
    host: str = "127.0.0.1",
    witness_threshold: int | None = None,
) -> LocalFederation:
    """Create a CA, one home per department, certificates and a first directory in ``root``."""
    authority = Authority.create(root / "authority", federation)
    homes: dict[str, Path] = {}
    for spec in departments:
        home = root / spec.department
        port = free_port(host)
        request = init_home(
            home,
            federation=federation,
            department=spec.department,
            display_name=spec.display_name or spec.department,
            listen=f"{host}:{port}",
            endpoint=f"{host}:{port}",
        )
        issued = authority.issue(request, witness=spec.witness)
        (home / "tls").mkdir(parents=True, exist_ok=True)
        (home / "tls" / "node.pem").write_bytes(issued.pem)
        (home / "ca.pem").write_bytes(authority.cert_path.read_bytes())
        homes[spec.department] = home
    fed = LocalFederation(root=root, federation=federation, authority=authority, homes=homes)
    fed.publish(witness_threshold=witness_threshold)
    return fed
