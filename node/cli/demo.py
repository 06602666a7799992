"""``fednode demo``: a whole federation on this machine, from ``seeds/``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from node.demo.plan import default_seeds, load_plan

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
    from node.demo.run import run_demo  # noqa: PLC0415 -- pulls in Flower; only the demo pays

    console = Console()
    plan = load_plan(args.seeds or default_seeds())
    started = time.monotonic()
    report = run_demo(plan, args.workdir.resolve(), keep=args.keep, console=console)
    console.rule("[bold]Summary")
    console.print("[bold]What moved[/bold] (encrypted, under signed agreements):")
    for line in report.moved or ["nothing"]:
        console.print(f"  • {line}")
    console.print("[bold]What stayed local[/bold]:")
    for line in report.stayed:
        console.print(f"  • {line}")
    console.print("[bold]Ledgers[/bold] (entries per department):")
    console.print("  " + ", ".join(f"{d} {n}" for d, n in report.ledgers.items()))
    console.print(f"[bold]Verification[/bold]: {report.verification or 'not run'}")
    console.print("[bold]Artefacts[/bold]:")
    for name, path in report.artefacts.items():
        console.print(f"  {name}: {path}")
    elapsed = time.monotonic() - started
    state = "left running (--keep)" if args.keep else "stopped; no process left behind"
    console.print(f"demo finished in {elapsed:.1f}s; nodes {state}")
    return 0
