"""The ``fednode`` command: one entry point for every role in a federation.

Each command group lives in its own module with a ``register(subparsers)``
function. Handlers return an exit code or raise a ``NodeError`` or
``LedgerError``; this module turns those into one line with the cause and a
hint, and a documented exit code (``node/cli/exit_codes.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ledger.errors import LedgerError
from node import __version__, interrupt
from node.cli import exit_codes
from node.config import default_home
from node.errors import NodeError

__all__ = ["GROUP_MODULES", "build_parser", "main"]

GROUP_MODULES: tuple[str, ...] = (
    "node.cli.authority",
    "node.cli.operator",
    "node.cli.dataset",
    "node.cli.agreement",
    "node.cli.share",
    "node.cli.app",
    "node.cli.fl",
    "node.cli.ledger",
    "node.cli.demo",
)

_ROLES = """\
command groups by role:
  federation authority   ca, directory           run the CA offline, publish the directory
  department operator    init, serve, status     enrol and run this department's node
                         request                 re-enrol with a new endpoint or name
                         dataset, agreement      catalog data, sign sharing agreements
                         share, app              fetch encrypted shares, approve Flower apps
  coordinator            fl                      launch and follow federated jobs
  auditor                ledger                  verify exported bundles and proofs offline
                                                 (verify, check-proof; --ca)
  everyone, first time   demo                    a whole federation on this machine

start with:  fednode demo          (or: make demo)
then:        fednode GROUP --help  for each group's commands and examples

exit codes: 0 ok, 1 internal, 2 usage, 3 config, 4 identity, 5 peer, 6 policy,
            7 integrity, 8 admin socket, 9 catalog, 10 federated job,
            11 busy (another program holds a file open; run the command again)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps an absent option from overwriting one given earlier on the line,
    # so "fednode --home H status" and "fednode status --home H" mean the same.
    existing = {opt for action in parser._actions for opt in action.option_strings}
    if "--home" not in existing:
        parser.add_argument(
            "--home",
            type=Path,
            default=argparse.SUPPRESS,
            help="node home folder (default: $FEDNODE_HOME or ./.fednode)",
        )
    if "--debug" not in existing:
        parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback when a command fails",
        )


def _subparser_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:  # type: ignore[type-arg]
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _decorate(parser: argparse.ArgumentParser, *, top_level_group: bool) -> None:
    parser.formatter_class = _Formatter
    _add_common_options(parser)
    if top_level_group:
        parser.set_defaults(_group_parser=parser)
    for action in _subparser_actions(parser):
        for child in set(action.choices.values()):
            _decorate(child, top_level_group=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fednode",
        description="fednode: privacy-preserving data sharing between government departments.\n"
        "Data stays on each department's node; departments train models together,\n"
        "exchange end-to-end encrypted Arrow batches under signed agreements, and\n"
        "record every access in a witnessed audit ledger.",
        epilog=_ROLES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"fednode {__version__}")
    _add_common_options(parser)
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP")
    for module_name in GROUP_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for group in set(subparsers.choices.values()):
        _decorate(group, top_level_group=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C from the first import on: the group modules load grpc, pyarrow and
    # Flower, which takes a while, and an interrupt then must end the command too.
    with interrupt.handling():
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print("fednode: interrupted", file=sys.stderr)
            return 130


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # An interrupt a library swallowed while loading still ends the command here.
    interrupt.check()
    handler = getattr(args, "handler", None)
    if handler is None:
        # A group without a command: show that group's help, or the top-level help.
        target = getattr(args, "_group_parser", None) or parser
        target.print_help()
        return exit_codes.USAGE if args.group else exit_codes.OK
    args.home = Path(getattr(args, "home", None) or default_home()).resolve()
    args.debug = bool(getattr(args, "debug", False))
    try:
        code = handler(args)
    except (NodeError, LedgerError) as e:
        if args.debug:
            traceback.print_exc()
        hint = getattr(e, "hint", None)
        print(f"fednode: error: {e}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return exit_codes.code_for(e)
    except BrokenPipeError:
        # The reader went away (`fednode ledger show | head`): nothing is wrong.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except Exception as e:  # noqa: BLE001 -- the CLI's last line of defence: one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"fednode: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: rerun with --debug for the traceback, and report it", file=sys.stderr)
        return exit_codes.INTERNAL
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
