"""``fednode init``, ``fednode serve`` and ``fednode status``: running a department's node."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.admin.client import invoke
from node.cli import exit_codes
from node.config import CONFIG_FILE, DEFAULT_PORT, load_config
from node.errors import ConfigError
from node.identity import certs, keys
from node.identity.enrolment import make_request
from node.identity.home import init_home
from node.output_path import check_output
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


_REQUEST_HELP = """\
Write a new enrolment request from this node's existing keys, for when its
endpoint (the address peers dial) or display name changes. Peers learn the
new address only from a directory the authority signs, so the change goes
through the authority like a certificate rotation; the keys stay the same.

steps:
  1. fednode request --endpoint traffic.new.example:7443 --home /var/lib/fednode
  2. the authority: fednode ca issue --request request.json --out node.pem --replace ...
                    fednode directory publish ...
  3. at the agreed time: set endpoint in node.toml, install node.pem as
     tls/node.pem, restart, and every node installs the new directory
"""


def _host_port(text: str, example: str) -> str:
    """Check ``text`` is ``HOST:PORT`` or ``[IPV6]:PORT`` and return it unchanged.

    Raises:
        argparse.ArgumentTypeError: it is not, naming ``example`` as a good value.
    """
    try:
        return certs.check_endpoint(text, example=example)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def display_name_arg(text: str) -> str:
    """A display name peers can be shown as it is (argparse type)."""
    try:
        return certs.check_display_name(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"{e}: {e.hint}") from None


def endpoint_arg(text: str) -> str:
    """``HOST:PORT`` as peers dial it (argparse type; a bad value is a usage error)."""
    return _host_port(text, f"traffic.city.example:{DEFAULT_PORT}")


def listen_arg(text: str) -> str:
    """``HOST:PORT`` the node binds, ``[::]:PORT`` for IPv6 (argparse type; a bad value
    is a usage error, so a node is never created that would bind a port nobody chose)."""
    return _host_port(text, f"0.0.0.0:{DEFAULT_PORT} or [::]:{DEFAULT_PORT}")


def register(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init",
        help="department operator: create keys, config and enrolment request",
        description=_INIT_HELP,
    )
    init.add_argument("--federation", required=True, help="federation id, e.g. 'city'")
    init.add_argument("--department", required=True, help="this department's id, e.g. 'traffic'")
    init.add_argument(
        "--display-name", default=None, type=display_name_arg, help="human name shown to peers"
    )
    init.add_argument(
        "--listen",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        type=listen_arg,
        help=f"bind address HOST:PORT, [::]:PORT for IPv6 (default 0.0.0.0:{DEFAULT_PORT})",
    )
    init.add_argument(
        "--endpoint",
        default=None,
        type=endpoint_arg,
        help=f"address peers dial, published in the directory (default: <hostname>:{DEFAULT_PORT})",
    )
    init.set_defaults(handler=_init)

    request = subparsers.add_parser(
        "request",
        help="department operator: a new enrolment request (new endpoint or name), same keys",
        description=_REQUEST_HELP,
    )
    request.add_argument(
        "--endpoint",
        type=endpoint_arg,
        default=None,
        help="the address peers will dial (default: node.toml's endpoint)",
    )
    request.add_argument(
        "--display-name",
        default=None,
        type=display_name_arg,
        help="human name shown to peers (default: node.toml's)",
    )
    request.add_argument(
        "--out", type=Path, default=None, help="where to write it (default: HOME/request.json)"
    )
    request.set_defaults(handler=_request)

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
    port = args.listen.rpartition(":")[2]  # listen_arg made sure there is one
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


def _request(args: argparse.Namespace) -> int:
    config = load_config(args.home)
    endpoint = args.endpoint or config.endpoint
    display_name = args.display_name or config.display_name
    out = args.out or config.home / "request.json"
    check_output(out, overwrite=True)  # a new request replaces the old one
    keys_dir = config.home / "keys"
    csr_pem, request = make_request(
        federation=config.federation,
        department=config.department,
        display_name=display_name,
        endpoint=endpoint,
        tls_key=keys.load_tls_key(keys_dir / "tls.key"),
        signing_key=keys.load_ed25519(keys_dir / "signing.key"),
        hpke_public=keys.load_hpke(keys_dir / "hpke.key").public_bytes,
    )
    keys.write_private_file(config.home / "tls" / "node.csr.pem", csr_pem)
    keys.write_private_file(out, request)
    print(f"wrote {out}: {config.department} at {endpoint} ({display_name}), same keys")
    print(
        "  send it to the federation authority ('fednode ca issue --replace', "
        "then 'directory publish')"
    )
    if endpoint != config.endpoint:
        print(
            f'  when the new directory is out: set endpoint = "{endpoint}" in '
            f"{config.home / 'node.toml'},\n  install the new certificate as tls/node.pem, "
            "restart the node, and install the directory"
        )
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
