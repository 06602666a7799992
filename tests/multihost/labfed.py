"""A fednode federation whose departments each live in their own network namespace.

Provisioning follows the production path (the authority's CA, ``init`` per
department, certificates, a signed directory), exactly as
``node.localfed.provision`` does, except that every department gets its own
lab address instead of a loopback port. Every command a department runs,
``fednode serve`` included, runs inside that department's namespace.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns import Lab

from node.admin.client import invoke, is_running
from node.identity.authority import Authority
from node.identity.home import init_home
from node.localfed import DepartmentSpec, LocalFederation

__all__ = ["PORT", "LabFederation", "provision_in_lab"]

PORT = 7443
ROOT = Path(__file__).resolve().parents[2]

# Starts a node with every service and admin module in the tree mounted,
# whether or not this build's server lists it yet: the scan finds modules that
# define ``add_services`` or register ``@admin_command`` handlers.
_LAUNCHER = """
import faulthandler, signal, sys
# 'kill -USR1 PID' writes every thread's stack to the node log: for diagnosing hangs.
faulthandler.register(signal.SIGUSR1, all_threads=True)
from node.admin import registry
from node.server import app
services, handlers = sys.argv[1].split(","), sys.argv[2].split(",")
app.SERVICE_MODULES = tuple(dict.fromkeys((*app.SERVICE_MODULES, *filter(None, services))))
registry.HANDLER_MODULES = tuple(
    dict.fromkeys((*registry.HANDLER_MODULES, *filter(None, handlers))))
from node.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def _modules_defining(pattern: str) -> list[str]:
    found = []
    for path in sorted((ROOT / "node").rglob("*.py")):
        if re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE):
            found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


@dataclass
class LabFederation:
    """A provisioned federation inside a :class:`Lab`."""

    lab: Lab
    fed: LocalFederation

    @property
    def homes(self) -> dict[str, Path]:
        return self.fed.homes

    def start(self, department: str) -> None:
        """Start ``fednode serve`` inside the department's namespace."""
        home = self.homes[department]
        services = ",".join(_modules_defining(r"^def add_services\("))
        handlers = ",".join(_modules_defining(r"^@admin_command\("))
        log = (home / "node.log").open("ab")
        command = [
            sys.executable,
            "-c",
            _LAUNCHER,
            services,
            handlers,
            "serve",
            "--home",
            str(home),
        ]
        self.lab.popen(department, command, stdout=log, stderr=log, env=dict(os.environ))
        log.close()

    def wait_ready(self, departments: Sequence[str], timeout: float = 30.0) -> None:
        """Wait until each node answers on its admin socket (a Unix socket: no network)."""
        deadline = time.monotonic() + timeout
        for department in departments:
            home = self.homes[department]
            while not is_running(home):
                if time.monotonic() > deadline:
                    tail = (home / "node.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"node {department} did not start:\n{tail}")
                time.sleep(0.1)

    def admin(self, department: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call an admin command on the department's running node, as its CLI does.

        Checks use this instead of the CLI to skip a process start per query;
        the admin socket is a Unix socket, so the namespace does not matter.
        """
        return invoke(self.homes[department], command, args)

    def fednode(
        self, department: str, *args: str | Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI as ``department``'s operator, inside its namespace."""
        command = [sys.executable, "-m", "node.cli.main", *map(str, args),
                   "--home", str(self.homes[department])]  # fmt: skip
        started = time.monotonic()
        result = self.lab.run(department, command, timeout=timeout)
        if os.environ.get("FEDNODE_LAB_TRACE"):
            print(f"[{time.monotonic() - started:5.1f}s] {department}: {' '.join(map(str, args))}")
        return result


def provision_in_lab(
    lab: Lab,
    root: Path,
    federation: str,
    departments: Sequence[DepartmentSpec],
    *,
    witness_threshold: int | None = None,
    rpc_timeout_seconds: int = 30,
) -> LabFederation:
    """Create the CA, one home per department at its lab address, and the first directory.

    Args:
        lab: The lab whose departments match ``departments``.
        root: Folder for the authority and every home.
        federation: The federation id.
        departments: The departments, each already in ``lab``.
        witness_threshold: Cosignatures a checkpoint needs (default: the authority's).
        rpc_timeout_seconds: Each node's outgoing RPC deadline.

    Returns:
        The federation, not yet started.
    """
    authority = Authority.create(root / "authority", federation)
    homes: dict[str, Path] = {}
    for spec in departments:
        home = root / spec.department
        address = f"{lab.address(spec.department)}:{PORT}"
        request = init_home(
            home,
            federation=federation,
            department=spec.department,
            display_name=spec.display_name or spec.department,
            listen=address,
            endpoint=address,
        )
        config = home / "node.toml"
        config.write_text(
            config.read_text().replace(
                "rpc_timeout_seconds = 30", f"rpc_timeout_seconds = {rpc_timeout_seconds}"
            )
        )
        issued = authority.issue(request, witness=spec.witness)
        (home / "tls").mkdir(parents=True, exist_ok=True)
        (home / "tls" / "node.pem").write_bytes(issued.pem)
        (home / "ca.pem").write_bytes(authority.cert_path.read_bytes())
        homes[spec.department] = home
    fed = LocalFederation(root=root, federation=federation, authority=authority, homes=homes)
    fed.publish(witness_threshold=witness_threshold)
    return LabFederation(lab=lab, fed=fed)
