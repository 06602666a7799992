"""Run the demo federation end to end and print what happened.

The demo drives the nodes exactly as operators would: every step after
provisioning is an admin command sent to a running node's admin socket, and
each node is its own ``fednode serve`` process talking mTLS to the others.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from node.admin.client import invoke
from node.demo.plan import DemoPlan
from node.errors import ConfigError, NodeError
from node.localfed import DepartmentSpec, LocalFederation, provision

__all__ = ["DemoReport", "run_demo"]

_MARKER = ".fednode-demo"


@dataclass
class DemoReport:
    workdir: Path
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    stayed: list[str] = field(default_factory=list)
    ledgers: dict[str, int] = field(default_factory=dict)
    verification: str = ""
    artefacts: dict[str, Path] = field(default_factory=dict)


class Demo:
    def __init__(self, plan: DemoPlan, workdir: Path, console: Console) -> None:
        self.plan = plan
        self.workdir = workdir
        self.console = console
        self.report = DemoReport(workdir=workdir)
        self.fed: LocalFederation | None = None

    # -- plumbing ----------------------------------------------------------------

    def step(self, title: str, fn: Callable[[], str]) -> None:
        self.console.rule(f"[bold]{title}")
        started = time.monotonic()
        summary = fn()
        elapsed = time.monotonic() - started
        self.report.steps.append((title, elapsed, summary))
        self.console.print(f"[green]✓[/green] {summary} [dim]({elapsed:.1f}s)[/dim]")

    @property
    def federation(self) -> LocalFederation:
        assert self.fed is not None
        return self.fed

    def home(self, department: str) -> Path:
        return self.federation.homes[department]

    def admin(
        self,
        department: str,
        command: str,
        args: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        return invoke(self.home(department), command, args, on_event)

    # -- steps ---------------------------------------------------------------------

    def provision(self) -> str:
        specs = [
            DepartmentSpec(d.id, d.display_name, witness=d.witness) for d in self.plan.departments
        ]
        self.fed = provision(
            self.workdir / "federation",
            self.plan.federation,
            specs,
            witness_threshold=self.plan.witness_threshold,
        )
        self.report.artefacts["federation"] = self.workdir / "federation"
        return (
            f"CA, {len(specs)} enrolled departments, signed directory serial 1 "
            f"(witness threshold {self.plan.witness_threshold})"
        )

    def start_nodes(self) -> str:
        for department in self.federation.homes:
            self.federation.start(department)
        self.federation.wait_ready(timeout=60)
        status = self.admin(self.plan.coordinator, "node.status", {})
        reachable = [p["department"] for p in status["peers"] if p["reachable"]]
        unreachable = [p for p in status["peers"] if not p["reachable"]]
        if unreachable:
            raise NodeError(f"peers not reachable over mTLS: {unreachable}")
        for peer in status["peers"]:
            self.console.print(f"  {self.plan.coordinator} ⇄ {peer['detail']}")
        return f"{len(self.federation.homes)} nodes running; mutual TLS with {len(reachable)} peers"

    def stop(self) -> None:
        if self.fed is not None:
            self.fed.stop_all()


def prepare_workdir(workdir: Path) -> None:
    """Empty ``workdir`` if it holds a previous demo; refuse to touch anything else.

    Raises:
        ConfigError: the folder exists, is not empty, and was not made by the demo.
    """
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / _MARKER).exists():
            raise ConfigError(
                f"{workdir} exists and was not made by 'fednode demo'",
                hint="pass another --workdir, or remove the folder",
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).write_text("made by fednode demo; safe to delete\n")


def run_demo(plan: DemoPlan, workdir: Path, *, keep: bool, console: Console) -> DemoReport:
    prepare_workdir(workdir)
    demo = Demo(plan, workdir, console)
    try:
        demo.step("1. Federation authority: CA, certificates, directory", demo.provision)
        demo.step("2. Department nodes start and authenticate each other", demo.start_nodes)
    finally:
        if not keep:
            demo.stop()
    return demo.report
