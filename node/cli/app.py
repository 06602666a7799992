"""``fednode app``: build Flower App Bundles and keep this node's list of approved apps.

A folder, file or digest that names nothing usable is a usage error (exit 2)
naming it, found before Flower is imported or anything is written. ``build``
never replaces an existing FAB unless ``--overwrite`` is given. ``list``
prints every digest whole, whatever the terminal width, since ``revoke``
takes exactly that digest.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.exit_codes import UsageError
from node.config import load_config
from node.fl.errors import AppBundleError
from node.output_path import check_output
from node.timefmt import utc_text

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


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LIST_HINT = "run 'fednode app list' for the approved digests, and copy one whole"


def _digest(text: str) -> str | None:
    """The lower-case hex SHA-256 in ``text`` (``sha256:`` prefix optional), or None."""
    digest = text.strip().lower().removeprefix("sha256:")
    return digest if _HEX64.match(digest) else None


def _check_readable(path: Path, what: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from e


def _check_app(app: Path) -> None:
    """Refuse an app path that cannot be built, before Flower is imported.

    Raises:
        UsageError: ``app`` is missing or unreadable, or is a folder without a
            pyproject.toml.
    """
    hint = "name a Flower app folder (the one holding its pyproject.toml) or a .fab file"
    if app.is_dir():
        try:
            names = {entry.name for entry in app.iterdir()}
        except OSError as e:
            raise UsageError(f"cannot read app folder {app}: {e.strerror}", hint=hint) from e
        if "pyproject.toml" not in names:
            raise UsageError(
                f"{app} is not a Flower app folder: it has no pyproject.toml", hint=hint
            )
        _check_readable(app / "pyproject.toml", "app file")
    elif app.is_file():
        _check_readable(app, "FAB file")
    else:
        raise UsageError(f"app folder {app} does not exist", hint=hint)


def _build(args: argparse.Namespace) -> int:
    app = Path(args.app)
    _check_app(app)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output(out, overwrite=args.overwrite, overwrite_flag="--overwrite")

    from node.fl.bundle import build_bundle  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it

    bundle = build_bundle(app)
    if out is None:
        out = Path(f"{bundle.name}.fab")
        check_output(out, overwrite=args.overwrite, overwrite_flag="--overwrite")
    out.write_bytes(bundle.data)
    print(f"{out}  {bundle.fab_id} {bundle.version}  sha256:{bundle.sha256}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.is_dir():
        raise UsageError(
            f"{target} is a folder, not a FAB file",
            hint="build it first: fednode app build FOLDER --out APP.fab",
        )
    if target.exists():
        _check_readable(target, "FAB file")
    elif _digest(args.target) is None:
        raise UsageError(
            f"{args.target}: no such file, and not a SHA-256 digest",
            hint="pass the .fab file or its 64-character hex SHA-256",
        )
    try:
        approval = _store(args).approve(args.target)
    except AppBundleError as e:
        # A wrong file (a CSV, a zip of a folder) is a usage slip, not a failed job.
        raise UsageError(
            f"{target} is not a Flower App Bundle (FAB): {e}",
            hint="build one with 'fednode app build FOLDER --out APP.fab' and approve that file",
        ) from e
    label = f"{approval.name} {approval.version}".strip() or "(digest only)"
    print(f"approved sha256:{approval.sha256}  {label}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    digest = _digest(args.sha256)
    if digest is None:
        raise UsageError(
            f"{args.sha256!r} is not a FAB SHA-256 (64 hex characters)", hint=_LIST_HINT
        )
    if not _store(args).revoke(digest):
        raise UsageError(f"sha256:{digest} is not on this node's approved list", hint=_LIST_HINT)
    print(f"revoked sha256:{digest}")
    return 0


def _list(args: argparse.Namespace) -> int:
    approvals = _store(args).approvals()
    if not approvals:
        print("no approved apps")
    # Two lines per app rather than a table: a 64-hex digest leaves no room for
    # other columns on an 80-column terminal, and a table would cut it.
    for a in approvals:
        label = f"{a.name} {a.version}".strip() or "(digest only)"
        print(f"{label}  approved {utc_text(a.approved_at)}")
        print(f"  sha256:{a.sha256}")
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
    build.add_argument(
        "--out", help="FAB file to write (default: <name>.fab); it must not exist yet"
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
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
    revoke.add_argument(
        "sha256", help="the FAB's full SHA-256 as 'fednode app list' prints it ('sha256:' optional)"
    )
    revoke.set_defaults(handler=_revoke)

    listing = commands.add_parser(
        "list",
        help="show approved apps",
        description="List approved FABs.\n\nexample:\n  fednode app list",
    )
    listing.set_defaults(handler=_list)
