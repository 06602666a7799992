"""``fednode demo``: a whole federation on this machine, from ``seeds/``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from node.demo.plan import default_seeds, load_plan
from node.demo.run import run_demo

__all__ = ["register"]

_HELP = """\
Build a temporary federation from seeds/federation.toml in one folder and run
it end to end: a CA and directory, department nodes as separate processes,
signed agreements, an encrypted share, a federated job with SecAgg+ and DP,
witnessed ledger checkpoints, and an offline, cross-checked ledger audit.

examples:
  fednode demo                         # uses ./demo-run, stops every node at the end
  fednode demo --workdir /tmp/fed --keep   # leave the nodes running to explore
"""


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="everyone: run a whole federation on this machine", description=_HELP
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo-run"),
        help="folder for the demo (default ./demo-run)",
    )
    demo.add_argument(
        "--seeds", type=Path, default=None, help="seeds folder (default: the checkout's)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="leave the federation running for exploring"
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    console = Console()
    plan = load_plan(args.seeds or default_seeds())
    started = time.monotonic()
    report = run_demo(plan, args.workdir.resolve(), keep=args.keep, console=console)
    console.rule("[bold]Summary")
    for title, elapsed, summary in report.steps:
        console.print(f"  {title}: {summary} [dim]({elapsed:.1f}s)[/dim]")
    console.print(
        f"demo finished in {time.monotonic() - started:.1f}s; artefacts in {report.workdir}"
    )
    return 0
