"""``fednode share``: fetch an end-to-end encrypted share from another department."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from node.admin.client import invoke
from node.cli.node_output import warn_if_unseen
from node.cli.progress import fit_description

__all__ = ["register"]

_FETCH_HELP = """\
Fetch the rows an agreement grants from the providing department. The data
travels encrypted to this node's key (envelope v1), is verified chunk by chunk,
and the output file appears only once everything verified: there is never a
partial file. This node then signs a receipt for the provider, and both
ledgers record the share under the same id and digest.

examples:
  fednode share fetch --from health --agreement agr-1f0c... --out visits.parquet
  fednode share fetch --from health --agreement agr-1f0c... --out visits.arrow \\
      --columns district,age
"""


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "share",
        help="analyst: fetch encrypted shares under agreements",
        description="Fetch end-to-end encrypted Arrow shares.\n\nexample:\n"
        "  fednode share fetch --from health --agreement agr-... --out visits.parquet",
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")
    fetch = commands.add_parser(
        "fetch", help="fetch a share into a Parquet or Arrow file", description=_FETCH_HELP
    )
    fetch.add_argument("--from", dest="provider", required=True, help="providing department id")
    fetch.add_argument("--agreement", required=True, help="agreement id (agr-...)")
    fetch.add_argument("--out", type=Path, required=True, help="output file (.parquet or .arrow)")
    fetch.add_argument("--format", choices=["parquet", "arrow"], help="override the extension")
    fetch.add_argument("--columns", default=None, help="comma-separated subset of shared columns")
    fetch.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    fetch.add_argument(
        "--compression",
        choices=["zstd", "none"],
        default="zstd",
        help="buffer compression before encryption (default zstd: fewer bytes to encrypt, "
        "hash, send and write; an .arrow output stays zstd-compressed, as pyarrow.feather "
        "writes it; none gives an uncompressed file for memory mapping)",
    )
    fetch.add_argument(
        "--validate",
        action="store_true",
        help="decode and fully validate every batch of an .arrow output before writing it "
        "(about 1 CPU-second per GB more; .parquet output is always validated)",
    )
    fetch.add_argument(
        "--limit-rate", type=int, default=None, metavar="BYTES_PER_S", help="cap the transfer rate"
    )
    fetch.add_argument(
        "--json", action="store_true", help="print the result as JSON, no progress bar"
    )
    fetch.set_defaults(handler=_fetch)


def share_progress(console: Console, description: str) -> tuple[Progress, TaskID]:
    """The progress display of a share, fitted to the terminal.

    The bar, percentage, rows, rate and time remaining always show; megabytes
    and elapsed time only on a wide terminal (120 columns or more), and the
    name is shortened to what is left.
    """
    wide = console.width >= 120
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30 if wide else 10),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:>11,} rows"),
    ]
    if wide:
        columns.append(TextColumn("{task.fields[mb]:>9.1f} MB"))
    columns.append(TextColumn("{task.fields[rate]:>7.1f} MB/s"))
    if wide:
        columns.append(TimeElapsedColumn())
    columns.append(TimeRemainingColumn())
    # Widths of the other columns and the spaces between them, as rich lays them out.
    used = (30 + 4 + 16 + 12 + 12 + 7 + 7 + 7) if wide else (10 + 4 + 16 + 12 + 7 + 5)
    description = fit_description(description, console.width, used)
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(escape(description), total=None, rows=0, mb=0.0, rate=0.0)
    return progress, task


def _fetch(args: argparse.Namespace) -> int:
    request = {
        "from": args.provider,
        "agreement": args.agreement,
        "out": str(args.out.resolve()),
        "format": args.format,
        "columns": [c for c in (args.columns or "").split(",") if c],
        "overwrite": args.overwrite,
        "validate": args.validate,
        "compression": args.compression,
        "limit_rate": args.limit_rate,
    }
    if args.json:
        result = invoke(args.home, "share.fetch", request)
        print(json.dumps(result, indent=2))
        return 0
    console = Console(stderr=True)
    # Shown from the provider's header on, so a share refused before any data
    # ends with its error alone, not under an empty bar.
    progress, task = share_progress(console, f"{args.provider} -> {args.out.name}")

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "header":
            progress.start()
            if event.get("rows_expected"):
                # The provider's estimate, for the bar only; the trailer's count is checked.
                progress.update(task, total=event["rows_expected"])
        if event.get("event") == "progress":
            progress.update(
                task,
                completed=event["rows"],
                rows=event["rows"],
                mb=event["bytes"] / 1e6,
                rate=event["bytes_per_second"] / 1e6,
            )

    try:
        result = invoke(args.home, "share.fetch", request, on_event=on_event)
        progress.update(
            task,
            total=result["rows"] or 1,
            completed=result["rows"] or 1,
            rows=result["rows"],
            mb=result["bytes"] / 1e6,
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    print(
        f"{result['rows']:,} rows in {result['chunks']} chunks -> {result['path']} "
        f"({result['bytes'] / 1e6:.1f} MB in {result['seconds']:.1f}s)\n"
        f"share {result['share_id']}  digest {result['digest']}"
    )
    warn_if_unseen(Path(result["path"]))
    if not result["receipt_acknowledged"]:
        print(
            "warning: the provider did not acknowledge the receipt; it is recorded in this ledger"
        )
    return 0
