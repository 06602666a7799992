"""``fednode dataset``: register datasets in this node's catalog and inspect them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from node.admin.client import invoke
from node.cli.exit_codes import UsageError
from node.cli.progress import fit_description

__all__ = ["read_progress", "register"]

_GROUP_HELP = """\
Register the datasets this department may share, with a sensitivity label for
every column (public, internal or personal). The data stays where it is; the
catalog keeps its path, schema and row count. Nothing is shared until an
agreement names the dataset and its columns.

examples:
  fednode dataset add visits /data/visits.parquet --label district=public
  fednode dataset list
  fednode dataset show visits
"""

_ADD_HELP = """\
Register a Parquet file or directory, a CSV file, or an Arrow IPC file. The
node reads PATH itself, now and at every share, so it must stay where it is and
readable by the account that runs 'fednode serve'. A directory is read as
Parquet; give --format csv for a directory of CSV files.

Columns get a conservative label unless given: 'personal' when the name looks
like data about a person (id, name, birth, address, age, ...), else 'internal'.
Nothing is ever labelled 'public' unless you say so.

The whole file is read once, as a share would read it, so a value that does
not fit its column (for example 'unknown' in a column of numbers far down a
CSV) is refused now, naming the column, line and value, instead of failing a
share later. On a terminal, a read that takes more than a second shows the
percentage of the data read and the time left.

With --replace, columns that keep their name and type keep their labels and
the description stays, unless given again; new columns get the default label.

examples:
  fednode dataset add visits /data/visits.parquet
  fednode dataset add roads /data/roads/ --label segment=public --label speed=internal
  fednode dataset add census /data/census.csv --description "2024 census extract"
"""


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "dataset",
        help="department operator: catalog data and its sensitivity",
        description=_GROUP_HELP,
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")
    add = commands.add_parser("add", help="register a dataset", description=_ADD_HELP)
    add.add_argument(
        "name",
        help="catalog name: 1-64 lowercase letters, digits, '_', '.', '-', starting with a "
        "letter or digit",
    )
    add.add_argument(
        "path", help="a .parquet/.pq, .csv or .arrow/.ipc/.feather file, or a directory"
    )
    add.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="COLUMN=LABEL",
        help="set a column's label: public, internal or personal (repeatable)",
    )
    add.add_argument(
        "--format",
        choices=["parquet", "csv", "arrow"],
        help="read PATH as this format (default: from its extension; a directory is parquet)",
    )
    add.add_argument(
        "--description",
        default=None,
        help="free text shown in listings (with --replace, the old one stays unless given)",
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="re-register an existing name after its data changed; labels of columns with "
        "the same name and type and the description are kept, new columns are listed for "
        "review; recorded as dataset.replaced",
    )
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(handler=_add)
    listing = commands.add_parser(
        "list",
        help="list registered datasets",
        description="List the catalog's datasets. The status column says when a dataset's\n"
        "files are missing or were modified since it was registered (from file sizes and\n"
        "times only; 'dataset show' also checks the schema). The row count is the one\n"
        "read at registration.\n\nexample:\n  fednode dataset list",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    show = commands.add_parser(
        "show",
        help="show a dataset's schema, rows and labels",
        description="Show one dataset's path, row count, columns, types and labels, and\n"
        "whether its files are missing, modified or of another schema since it was\n"
        "registered.\n\nexample:\n  fednode dataset show visits",
    )
    show.add_argument("name", help="the dataset's catalog name (see 'fednode dataset list')")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)


def _labels(pairs: list[str]) -> dict[str, str]:
    """Parse every ``--label COLUMN=LABEL``; the node checks the columns and labels.

    Raises:
        UsageError: a value is not COLUMN=LABEL, or names a column twice.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        column, sep, label = pair.partition("=")
        if not sep or not column or not label:
            raise UsageError(
                f"--label {pair!r} is not COLUMN=LABEL", hint="e.g. --label age=personal"
            )
        if column in labels and labels[column] != label:
            # Keeping either silently would register a label nobody decided on.
            raise UsageError(
                f"column {column!r} is given two labels ({labels[column]}, {label})",
                hint=f"give {column} one --label",
            )
        labels[column] = label
    return labels


def _print_status(console: Console, info: dict[str, Any]) -> None:
    status = info.get("status") or {}
    if status.get("state", "ok") == "ok":
        return
    console.print(
        f"[bold red]{status['state']}[/bold red]: {status['detail']}",
        highlight=False,
        soft_wrap=True,
    )
    if status.get("hint"):
        console.print(f"hint: {status['hint']}", highlight=False, soft_wrap=True)


def _print_changes(console: Console, changes: dict[str, list[str]]) -> None:
    for key, what in (
        ("new", "new columns (default label, review them)"),
        ("retyped", "columns with a new type (default label, review them)"),
        ("dropped", "dropped columns"),
    ):
        if changes.get(key):
            console.print(f"{what}: {', '.join(changes[key])}", highlight=False, soft_wrap=True)
    if changes.get("kept"):
        console.print(
            f"kept labels of: {', '.join(changes['kept'])}", highlight=False, soft_wrap=True
        )


def _print_dataset(info: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]{info['name']}[/bold]  {info['format']}  {info['rows']:,} rows  {info['path']}",
        soft_wrap=True,
    )
    _print_status(console, info)
    if info.get("description"):
        console.print(info["description"])
    table = Table("column", "type", "label")
    colours = {"personal": "red", "internal": "yellow", "public": "green"}
    for column in info["columns"]:
        colour = colours.get(column["label"], "white")
        table.add_row(column["name"], column["type"], f"[{colour}]{column['label']}[/{colour}]")
    console.print(table)


def read_progress(console: Console, name: str) -> tuple[Progress, TaskID]:
    """The progress display of a registration read, fitted to the terminal.

    The bar, percentage, rows and time remaining always show; megabytes read
    and elapsed time only on a wide terminal (120 columns or more), and the
    file name is shortened to what is left.
    """
    wide = console.width >= 120
    columns: list[ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(bar_width=30 if wide else 10),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:>13,} rows"),
    ]
    if wide:
        columns += [DownloadColumn(), TimeElapsedColumn()]
    columns.append(TimeRemainingColumn())
    # Widths of the other columns and the spaces between them, as rich lays them out.
    used = (30 + 4 + 18 + 15 + 7 + 7 + 6) if wide else (10 + 4 + 18 + 7 + 4)
    description = fit_description(f"reading {name}", console.width, used)
    progress = Progress(*columns, console=console, transient=True)
    task = progress.add_task(escape(description), total=None, rows=0)
    return progress, task


def _add(args: argparse.Namespace) -> int:
    request = {
        "name": args.name,
        "path": str(Path(args.path).resolve()),
        "format": args.format,
        "labels": _labels(args.label),
        "description": args.description,
        "replace": args.replace,
    }
    if args.json:
        print(json.dumps(invoke(args.home, "dataset.add", request), indent=2))
        return 0
    console = Console(stderr=True)
    if not console.is_terminal:
        # Progress is for a person watching; logs and pipes get the result alone.
        result = invoke(args.home, "dataset.add", request)
    else:
        result = _add_watched(args, request, console)
    _print_dataset(result)
    if result.get("changes"):
        _print_changes(Console(), result["changes"])
    return 0


def _add_watched(
    args: argparse.Namespace, request: dict[str, Any], console: Console
) -> dict[str, Any]:
    # The node reports progress only on reads that take a while; the display
    # starts with the first report, so small files print their result alone.
    progress, task = read_progress(console, Path(args.path).name)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            if not progress.live.is_started:
                progress.start()
            progress.update(
                task,
                total=event.get("total_bytes"),
                completed=event.get("bytes") or 0,
                rows=event["rows"],
            )

    try:
        return invoke(args.home, "dataset.add", request, on_event=on_event)
    finally:
        if progress.live.is_started:
            progress.stop()


def _list(args: argparse.Namespace) -> int:
    result = invoke(args.home, "dataset.list", {})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table("name", "status", "format", "rows", "columns", "personal", "path")
    colours = {"ok": "green", "modified": "yellow"}
    attention = []
    for d in result["datasets"]:
        personal = [c["name"] for c in d["columns"] if c["label"] == "personal"]
        state = (d.get("status") or {}).get("state", "ok")
        if state != "ok":
            attention.append(d["name"])
        colour = colours.get(state, "red")
        table.add_row(
            d["name"],
            f"[{colour}]{state}[/{colour}]",
            d["format"],
            f"{d['rows']:,}",
            str(len(d["columns"])),
            ", ".join(personal),
            d["path"],
        )
    console = Console()
    console.print(table)
    if attention:
        console.print(
            f"hint: 'fednode dataset show NAME' explains {', '.join(attention)}; after "
            "reviewing the data, 'fednode dataset add NAME PATH --replace'",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    result = invoke(args.home, "dataset.show", {"name": args.name})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_dataset(result)
    return 0
