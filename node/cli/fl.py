"""``fednode fl``: launch federated jobs from a coordinator node and follow them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from node.admin.client import invoke
from node.cli.exit_codes import UsageError
from node.cli.job_report import job_report
from node.config import load_config

__all__ = ["register"]

_LAUNCH_HELP = """\
Run a federated job from this (coordinator) node. The node builds the app's
FAB, opens the job at every participant over mTLS, runs the app's ServerApp,
and writes results to the job's output folder: model.npz (final arrays),
rounds.json (per-round participants and metrics) and summary.json. Participants
must have approved the FAB ('fednode app approve') and hold an agreement that
allows 'federated' to this department.

The job file is checked against the app before anything starts; a mistake in
it exits 2 naming the file and the key. An output folder that already holds a
job's results is refused (exit 2) unless --overwrite is given; results appear
only once the job ends, each file whole (summary.json last). Ctrl-C stops the
job: every participant is told at once and records the end (fl.ended), and
the job is recorded as failed.

job file (TOML), paths relative to it:
  [job]
  app = "../apps/traffic-risk"     # app directory or .fab
  rounds = 5                       # run-config num-server-rounds
  output = "results/traffic-risk"
  secagg = false                   # SecAgg+ at every participant
  [job.timeouts]                   # seconds: message = 120, start = 30, node-wait = 10,
                                   #   idle = 300 (participants end a silent job)
  [strategy]                       # run-config keys the app's strategy reads
  min-nodes = 3
  [run-config]                     # other overrides of [tool.flwr.app.config]
  [dp]                             # client-side DP (clip + Gaussian noise)
  clipping-norm = 1.0
  epsilon = 5.0
  delta = 1e-5
  [[participants]]
  department = "traffic"
  dataset = "incidents"
  agreement = "agr-..."

examples:
  fednode fl launch road-safety.toml --home /var/lib/fednode
  fednode fl launch road-safety.toml --overwrite   (replace the results of an earlier run)
(the [job] section of seeds/federation.toml is a complete example; `fednode demo`
writes it out as demo-run/fl/job.toml)
"""


class _Live:
    """Renders the node's progress events."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rounds"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        out = self.progress.console
        if kind == "job.started":
            out.print(
                f"job [bold]{event['job_id']}[/] app {event['app']}"
                f" sha256:{event['fab_sha256'][:16]}…"
            )
            total = event.get("rounds") if isinstance(event.get("rounds"), int) else None
            self.task = self.progress.add_task("training", total=total)
        elif kind == "participant":
            mark = "[green]joined[/]" if event["ok"] else f"[red]refused[/] ({event['error']})"
            rows = f" {event['rows']} rows, {len(event['columns'])} columns" if event["ok"] else ""
            out.print(f"  {event['department']}: {mark}{rows}")
        elif kind == "phase":
            metrics = "  ".join(f"{k}={v:.4g}" for k, v in sorted(event["metrics"].items()))
            failed = "".join(f"  [red]{d}: {why}[/]" for d, why in event["failed"].items())
            out.print(
                f"round {event['round']} {event['type']:<10} ok: {', '.join(event['ok']) or '-'}"
                f"  {metrics}{failed}"
            )
            if self.task is not None and isinstance(event["round"], int):
                self.progress.update(self.task, completed=event["round"])
        elif kind == "job.finished":
            colour = "green" if event["outcome"] == "ok" else "red"
            out.print(f"[{colour}]job {event['job_id']} {event['outcome']}[/]")


def _launch(args: argparse.Namespace) -> int:
    from node.fl.errors import JobFailedError, JobFileError  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it
    from node.fl.preflight import check_job_file  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it

    path = Path(args.job).resolve()
    try:
        # The same checks the node makes, here first: a mistake in the job file is
        # the operator's to fix (exit 2), not a failed job.
        job, _ = check_job_file(path)
    except JobFileError as e:
        raise UsageError(str(e), hint=e.hint) from e
    console = Console()
    weakness = job.dp.weakness() if job.dp else None
    if weakness:
        console.print(f"[yellow]warning: {weakness}[/]")
    live = _Live(console)
    with live.progress:
        summary = invoke(
            args.home,
            "fl.launch",
            {"job_file": str(path), "overwrite": bool(args.overwrite)},
            on_event=live,
        )
    if summary.get("outcome") != "ok":
        raise JobFailedError(str(summary.get("error")), hint=f"see {job.output}/summary.json")
    console.print(f"results in {job.output}: model.npz, rounds.json, summary.json")
    for kind, metrics in summary.get("final_metrics", {}).items():
        if metrics:
            console.print(
                f"  final {kind}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
    return 0


def _status(args: argparse.Namespace) -> int:
    from node.fl.coordinator import JobStatusStore  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it
    from node.fl.errors import JobFileError  # noqa: PLC0415 -- Flower takes seconds to import; only FL commands pay for it

    config = load_config(args.home)
    jobs = JobStatusStore(config.data_dir).read_all(_serving_pid(config.pid_path))
    if args.job_id:
        match = [j for j in jobs if j["job_id"] == args.job_id]
        if not match:
            raise JobFileError(f"no job {args.job_id} was coordinated by this node")
        status = match[0]
        summary = Path(status["output"]) / "summary.json"
        if summary.exists():
            status = {**status, "summary": json.loads(summary.read_text(encoding="utf-8"))}
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
        else:
            Console(highlight=False).print(job_report(status))
        return 0
    if args.json:
        print(json.dumps(jobs, indent=2, sort_keys=True))
        return 0
    table = Table()
    # The job id is what 'fl status JOB_ID' needs: it stays whole, the rest gives way.
    longest = max((len(str(j["job_id"])) for j in jobs), default=3)
    table.add_column("job", no_wrap=True, min_width=longest)
    for column in ("app", "state", "round", "participants", "output"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j["job_id"],
            j.get("app", ""),
            j.get("state", ""),
            str(j.get("round") or "-"),
            ", ".join(j.get("participants", [])),
            j.get("output", ""),
        )
    Console().print(table if jobs else "no federated jobs coordinated by this node")
    return 0


def _serving_pid(pid_path: Path) -> int | None:
    """The process of the node serving this home, from its pid file, if it is alive."""
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "fl",
        help="coordinator: launch federated learning jobs and follow them",
        description="Federated learning: Flower apps trained across departments' nodes.\n\n"
        "examples:\n  fednode fl launch job.toml\n  fednode fl status\n"
        "  fednode fl status traffic-risk-20261128T190000Z-a1b2c3",
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")
    launch = commands.add_parser(
        "launch", help="run a federated job (JOB.toml) from this node", description=_LAUNCH_HELP
    )
    launch.add_argument("job", help="job file (TOML)")
    launch.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results an earlier job left in the output folder "
        "(without it, such a folder is refused before anything starts)",
    )
    launch.set_defaults(handler=_launch)
    status = commands.add_parser(
        "status",
        help="list the jobs this node coordinated, or show one",
        description="Show federated jobs this node coordinated (read from the node's data folder; "
        "works while the node is down).\n\nexamples:\n  fednode fl status\n"
        "  fednode fl status JOB_ID\n  fednode fl status JOB_ID --json   (for scripts)",
    )
    status.add_argument("job_id", nargs="?", help="show this job's status and summary")
    status.add_argument(
        "--json",
        action="store_true",
        help="print JSON: the job's status and summary, or every job's status",
    )
    status.set_defaults(handler=_status)
