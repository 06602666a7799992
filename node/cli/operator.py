"""``fednode init``, ``fednode serve`` and ``fednode status``: running a department's node."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from node.admin.client import invoke
from node.cli import exit_codes
from node.config import CONFIG_FILE, DEFAULT_PORT
from node.errors import ConfigError
from node.identity import certs
from node.identity.home import init_home
from node.server.app import serve

__all__ = ["register"]

_INIT_HELP = """\
Create this department's keys and configuration, and an enrolment request for
the federation authority. Nothing leaves this machine: send request.json to
the authority, who returns a certificate and the federation directory.

examples:
  fednode init --home /var/lib/fednode --federation city --department traffic \\
      --display-name "Traffic Management Bureau" --endpoint traffic.city.example:7443
then, from the authority:
  cp traffic-node.pem /var/lib/fednode/tls/node.pem
  fednode directory install directory.json --ca-cert ca.pem --home /var/lib/fednode
  fednode serve --home /var/lib/fednode
"""


def register(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init",
        help="department operator: create keys, config and enrolment request",
        description=_INIT_HELP,
    )
    init.add_argument("--federation", required=True, help="federation id, e.g. 'city'")
    init.add_argument("--department", required=True, help="this department's id, e.g. 'traffic'")
    init.add_argument("--display-name", default=None, help="human name shown to peers")
    init.add_argument(
        "--listen",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        help=f"bind address (default 0.0.0.0:{DEFAULT_PORT})",
    )
    init.add_argument(
        "--endpoint",
        default=None,
        help=f"address peers dial, published in the directory (default: <hostname>:{DEFAULT_PORT})",
    )
    init.set_defaults(handler=_init)

    serve_parser = subparsers.add_parser(
        "serve",
        help="department operator: run the node (mTLS port + admin socket)",
        description="Run the node in the foreground until SIGTERM or Ctrl-C. Logs are JSON\n"
        "lines on stderr. The admin socket HOME/admin.sock (mode 0600) serves the\n"
        "operator commands.\n\nexample:\n  fednode serve --home /var/lib/fednode",
    )
    serve_parser.set_defaults(handler=lambda args: serve(args.home))

    status = subparsers.add_parser(
        "status",
        help="department operator: this node, its directory, and which peers answer",
        description="Ask the running node (through its admin socket) for its identity and\n"
        "directory serial, and make a real mTLS Node.Info call to every peer.\n\n"
        "Exits 0 when every peer answers and 5 when any does not (the table, or\n"
        "the JSON, is printed either way); 8 when no node is running in --home.\n"
        "Each peer call is an entry in that peer's ledger, so for periodic\n"
        "monitoring use deploy/healthcheck.py, which records nothing.\n\n"
        "example:\n  fednode status --home /var/lib/fednode",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_status)


def _init(args: argparse.Namespace) -> int:
    home = args.home
    certs.check_identifier(args.federation, "federation")
    certs.check_identifier(args.department, "department")
    if (home / CONFIG_FILE).exists():
        raise ConfigError(
            f"{home} already holds a node ({CONFIG_FILE} exists)",
            hint="use another --home; re-running init would replace this node's keys",
        )
    port = args.listen.rpartition(":")[2] or str(DEFAULT_PORT)
    endpoint = args.endpoint or f"{socket.getfqdn()}:{port}"
    display_name = args.display_name or args.department
    init_home(
        home,
        federation=args.federation,
        department=args.department,
        display_name=display_name,
        listen=args.listen,
        endpoint=endpoint,
    )
    print(f"initialised node '{args.department}' of federation '{args.federation}' in {home}")
    print(f"  send {home / 'request.json'} to the federation authority ('fednode ca issue')")
    print(f"  then place the certificate at {home / 'tls' / 'node.pem'} and install the directory")
    return 0


def _status(args: argparse.Namespace) -> int:
    result = invoke(args.home, "node.status", {})
    if args.json:
        print(json.dumps(result, indent=2))
        return _peers_verdict(result["peers"])
    console = Console()
    expires = dt.datetime.fromtimestamp(result["directory_expires_at"], dt.UTC)
    console.print(
        f"[bold]{result['display_name']}[/bold] ({result['federation']}/{result['department']}) "
        f"at {result['endpoint']}"
    )
    console.print(
        f"directory serial {result['directory_serial']}, expires {expires:%Y-%m-%d %H:%M} UTC, "
        f"witness threshold {result['witness_threshold']}"
    )
    table = Table("peer", "endpoint", "reachable", "detail")
    for peer in result["peers"]:
        mark = "[green]yes[/green]" if peer["reachable"] else "[red]no[/red]"
        table.add_row(peer["department"], peer["endpoint"], mark, peer["detail"])
    console.print(table)
    return _peers_verdict(result["peers"])


def _peers_verdict(peers: list[dict[str, Any]]) -> int:
    """0 when every peer answered; otherwise say which did not, on stderr, and return 5."""
    silent = [p["department"] for p in peers if not p["reachable"]]
    if not silent:
        return exit_codes.OK
    print(
        f"fednode: {len(silent)} of {len(peers)} peers did not answer: {', '.join(silent)}\n"
        "hint: the detail column says why; a peer that is down or unreachable needs its\n"
        "operator, a refused certificate needs the federation authority",
        file=sys.stderr,
    )
    return exit_codes.PEER
