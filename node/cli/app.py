"""``fednode app``: build Flower App Bundles and keep this node's list of approved apps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from node.config import load_config

if TYPE_CHECKING:
    from node.fl.approvals import ApprovalStore

__all__ = ["register"]

_HELP = """\
A department's node runs a federated job only if the job's Flower App Bundle
(FAB) is on this node's approved list, identified by its SHA-256. Review the
app's code, then approve the FAB file (or its digest). Approvals take effect
at once, also for running jobs; revoking one stops them at their next message.

examples:
  fednode app build seeds/apps/traffic-risk --out traffic-risk.fab
  fednode app approve traffic-risk.fab
  fednode app approve 6b7f3e96...c1          (the 64-hex SHA-256)
  fednode app list
  fednode app revoke 6b7f3e96...c1
"""


def _store(args: argparse.Namespace) -> ApprovalStore:
    from node.fl.approvals import ApprovalStore  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it

    return ApprovalStore.for_data_dir(load_config(args.home).data_dir)


def _build(args: argparse.Namespace) -> int:
    from node.fl.bundle import build_bundle  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it

    bundle = build_bundle(Path(args.app))
    out = Path(args.out) if args.out else Path(f"{bundle.name}.fab")
    out.write_bytes(bundle.data)
    print(f"{out}  {bundle.fab_id} {bundle.version}  sha256:{bundle.sha256}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    approval = _store(args).approve(args.target)
    label = f"{approval.name} {approval.version}".strip() or "(digest only)"
    print(f"approved sha256:{approval.sha256}  {label}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if _store(args).revoke(args.sha256):
        print(f"revoked {args.sha256}")
        return 0
    print(f"{args.sha256} was not approved")
    return 1


def _list(args: argparse.Namespace) -> int:
    approvals = _store(args).approvals()
    table = Table("sha256", "app", "version", "approved at (unix)")
    for a in approvals:
        table.add_row(a.sha256, a.name or "-", a.version or "-", str(a.approved_at))
    Console().print(table if approvals else "no approved apps")
    return 0


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "app",
        help="department operator: build FABs, approve the apps this node may run",
        description=_HELP,
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="build a FAB from an app directory (as 'flwr build' does)",
        description="Build a Flower App Bundle and print its SHA-256.\n\n"
        "example:\n  fednode app build seeds/apps/traffic-risk --out traffic-risk.fab",
    )
    build.add_argument("app", help="Flower app directory (with pyproject.toml)")
    build.add_argument("--out", help="FAB file to write (default: <name>.fab)")
    build.set_defaults(handler=_build)

    approve = commands.add_parser(
        "approve",
        help="approve a FAB file or SHA-256 for federated jobs on this node",
        description="Approve a FAB (file or 64-hex SHA-256).\n\n"
        "example:\n  fednode app approve traffic-risk.fab",
    )
    approve.add_argument("target", help="FAB file, or its SHA-256 (hex, optionally 'sha256:')")
    approve.set_defaults(handler=_approve)

    revoke = commands.add_parser(
        "revoke",
        help="remove an approval (running jobs stop at their next message)",
        description="Revoke an approved FAB digest.\n\nexample:\n  fednode app revoke 6b7f...",
    )
    revoke.add_argument("sha256", help="the FAB's SHA-256")
    revoke.set_defaults(handler=_revoke)

    listing = commands.add_parser(
        "list",
        help="show approved apps",
        description="List approved FABs.\n\nexample:\n  fednode app list",
    )
    listing.set_defaults(handler=_list)
