"""Health check for a fednode node in a container or under a supervisor.

Healthy means: the node answers on its admin socket (so its certificate, keys
and directory loaded) and its federation port accepts TCP connections.

It deliberately makes no RPC. Every RPC a node serves is an entry in its audit
ledger, and ``fednode status`` also calls every peer, so probing with it every
30 seconds would fill every department's ledger with health checks. A socket
connection that carries no call leaves no entry anywhere.

Exit status 0 when healthy, 1 otherwise, with one line saying why.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from node.admin.client import is_running
from node.config import load_config
from node.errors import NodeError

# Listen addresses that mean "every interface"; the check then dials loopback.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}  # noqa: S104 -- compared, never bound


def check(home: Path, timeout: float = 5.0) -> str | None:
    """Return why the node in ``home`` is unhealthy, or None if it is healthy.

    Args:
        home: The node's home folder.
        timeout: Seconds to wait for the federation port.

    Returns:
        A one-line reason, or None.
    """
    try:
        config = load_config(home)
    except NodeError as e:
        return str(e)
    if not is_running(home):
        return f"no node answers on {config.admin_socket}"
    host, _, port = config.listen.rpartition(":")
    host = "127.0.0.1" if host in _WILDCARDS else host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        return f"federation port {config.listen} does not accept connections: {e}"
    return None


def main() -> int:
    """Check the node in ``$FEDNODE_HOME`` (default /var/lib/fednode)."""
    home = Path(os.environ.get("FEDNODE_HOME", "/var/lib/fednode"))
    reason = check(home)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
