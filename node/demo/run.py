"""Run the demo federation end to end and print what happened.

The demo drives the nodes exactly as operators would: every step after
provisioning is an admin command sent to a running node's admin socket, and
each node is its own ``fednode serve`` process talking mTLS to the others.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ledger import canonical
from ledger.verify import verify_bundle
from node.admin.client import invoke, is_running
from node.config import load_config
from node.demo.plan import DemoPlan
from node.errors import ConfigError, NodeError
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle
from node.fl.errors import JobFileError
from node.fl.jobfile import dp_config
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
        self.agreement_ids: dict[str, str] = {}

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

    def register_datasets(self) -> str:
        count = 0
        for department in self.plan.departments:
            rows = 0
            for dataset in department.datasets:
                labels = dict.fromkeys(dataset.personal, "personal")
                result = self.admin(
                    department.id,
                    "dataset.add",
                    {"name": dataset.name, "path": str(dataset.path), "labels": labels},
                )
                count += 1
                rows += int(result.get("rows") or 0)
            if department.datasets:
                self.report.stayed.append(
                    f"{department.id}: {len(department.datasets)} datasets ({rows:,} rows) held "
                    "on its own node; only what an agreement grants ever leaves"
                )
        return f"{count} datasets catalogued in place; none of them left its node"

    def sign_agreements(self) -> str:
        now = int(time.time())
        for plan in self.plan.agreements:
            created = self.admin(
                plan.provider,
                "agreement.create",
                {
                    "consumer": plan.consumer,
                    "dataset": plan.dataset,
                    "purpose_code": plan.purpose_code,
                    "purpose_text": plan.purpose_text,
                    "valid_until": now + plan.valid_days * 86400,
                    "modes": list(plan.modes),
                    "columns": plan.columns,
                },
            )
            signed = {
                "agreement": created["agreement"],
                "provider_signature": created["provider_signature"],
            }
            countersigned = self.admin(
                plan.consumer,
                "agreement.countersign",
                {"agreement_b64": base64.b64encode(canonical.dumps(signed)).decode(), "push": True},
            )
            if not countersigned.get("pushed"):
                raise NodeError(
                    f"agreement {plan.name}: countersignature did not reach {plan.provider}: "
                    f"{countersigned.get('push_error')}"
                )
            self.agreement_ids[plan.name] = str(created["agreement"]["id"])
            self.console.print(
                f"  {plan.provider} → {plan.consumer}: {plan.dataset} for "
                f"{'/'.join(plan.modes)} ({plan.purpose_code})"
            )
        count = len(self.plan.agreements)
        return f"{count} agreements signed by providers, countersigned by consumers"

    def encrypted_share(self) -> str:
        transfers = [a for a in self.plan.agreements if "transfer" in a.modes]
        if not transfers:
            return "no transfer agreement in the plan"
        plan = transfers[0]
        out = self.workdir / "shares" / f"{plan.consumer}-{plan.dataset}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = self.admin(
            plan.consumer,
            "share.fetch",
            {"from": plan.provider, "agreement": self.agreement_ids[plan.name], "out": str(out)},
        )
        kept = [c for c, t in plan.columns.items() if t.get("treatment") != "drop"]
        dropped = [c for c, t in plan.columns.items() if t.get("treatment") == "drop"]
        self.report.moved.append(
            f"{plan.provider} → {plan.consumer}: {result['rows']} rows of {plan.dataset}, "
            f"{len(kept)} agreed columns, encrypted end to end (share {result['share_id'][:8]}…, "
            f"{result['digest'][:19]}…)"
        )
        if dropped:
            self.report.stayed.append(
                f"{plan.provider}/{plan.dataset}: {', '.join(dropped)} (dropped by the agreement)"
            )
        self.report.artefacts["share"] = out
        # The coordinator holds a federated-only agreement; asking to download the rows is refused
        # by its own node before any request leaves, and recorded in its ledger as a denial
        # (the provider checks the same agreement and would refuse too).
        federated = next((a for a in self.plan.agreements if a.modes == ("federated",)), None)
        if federated is not None:
            try:
                self.admin(
                    federated.consumer,
                    "share.fetch",
                    {
                        "from": federated.provider,
                        "agreement": self.agreement_ids[federated.name],
                        "out": str(self.workdir / "shares" / "refused.parquet"),
                    },
                )
            except NodeError as e:
                self.console.print(
                    f"  {federated.consumer} asks {federated.provider} for raw "
                    f"{federated.dataset} rows under a federated-only agreement: refused by "
                    f"{federated.consumer}'s own node before asking, and recorded in its "
                    f"ledger ({e})"
                )
                self.report.stayed.append(
                    f"{federated.provider}/{federated.dataset}: raw rows refused to "
                    f"{federated.consumer} (agreement allows federated use only)"
                )
            else:
                raise NodeError("a federated-only agreement allowed a raw transfer")
        return (
            f"{result['rows']} rows moved {plan.provider} → {plan.consumer} in "
            f"{result['seconds']:.2f}s; receipt signed and recorded on both sides"
        )

    def federated_job(self) -> str:
        job = self.plan.job
        if not job:
            return "no federated job in the plan"
        bundle = build_bundle((self.plan.seeds / str(job["app"])).resolve())
        fab = self.workdir / "apps" / f"{bundle.name}.fab"
        fab.parent.mkdir(parents=True, exist_ok=True)
        fab.write_bytes(bundle.data)
        participants = list(job.get("participants", ()))
        # Each participant's operator approves the app's digest before it may run there.
        for participant in participants:
            config = load_config(self.home(str(participant["department"])))
            ApprovalStore.for_data_dir(config.data_dir).approve(str(fab))
        output = self.workdir / "fl" / str(job.get("name", bundle.name))
        dp = dict(job.get("dp", {}))
        # The plan's [job] mirrors the job file of 'fednode fl launch'; only the app
        # (now a built FAB), the output folder and the agreement ids are filled in here.
        header = {k: v for k, v in job.items() if not isinstance(v, dict | list)}
        header.update(app=str(fab), output=str(output))
        lines = _toml_table("job", header)
        for table in ("strategy", "run-config", "dp"):
            if isinstance(job.get(table), dict):
                lines += _toml_table(table, job[table])
        for participant in participants:
            name = str(participant["agreement"])
            lines += _toml_table(
                "[participants]",
                {**participant, "agreement": self.agreement_ids.get(name, name)},
            )
        job_file = self.workdir / "fl" / "job.toml"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text("\n".join(lines) + "\n")

        def progress(event: dict[str, Any]) -> None:
            line = progress_line(event)
            if line is not None:
                self.console.print(f"  {line}")

        summary = self.admin(
            self.plan.coordinator, "fl.launch", {"job_file": str(job_file)}, progress
        )
        joined = [p["department"] for p in summary["participants"] if p["joined"]]
        final: dict[str, Any] = {}
        for values in (summary.get("final_metrics") or {}).values():
            if isinstance(values, dict):
                final.update(values)
        shown = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items()
        )
        self.report.moved.append(
            f"{', '.join(joined)} → {self.plan.coordinator}: masked model updates only "
            f"({summary['rounds']} rounds, SecAgg+ {'on' if summary['secagg'] else 'off'}, "
            f"DP clip {dp.get('clipping-norm', 'off')}{_dp_caveat(dp)})"
        )
        trained = sum(int(p["rows"] or 0) for p in summary["participants"] if p["joined"])
        self.report.stayed.append(
            f"federated training: {trained:,} rows read where they live; the coordinator saw "
            "only the masked sum of the updates"
        )
        self.report.artefacts["federated results"] = output
        return (
            f"{summary['rounds']} rounds across {len(joined)} departments in "
            f"{summary['seconds']:.1f}s; final {shown or 'metrics in the results folder'}"
        )

    def witness_and_audit(self) -> str:
        bundles: list[Path] = []
        published = 0
        # Witnessing writes entries into the witnesses' own ledgers, so a second round
        # checkpoints most of those too. What a node records after its last checkpoint
        # (cosignatures it gives later, the export call itself) is still hash-chained, and
        # the verifier reports it as not yet covered by a published checkpoint.
        for round_ in (1, 2):
            published = 0
            for department in self.federation.homes:
                checkpoint = self.admin(department, "ledger.checkpoint", {})
                published += int(bool(checkpoint["published"]))
                if round_ == 2:
                    self.console.print(
                        f"  {department}: checkpoint over its first {checkpoint['size']} "
                        f"entries, cosigned by {', '.join(checkpoint['cosigners']) or 'nobody'}"
                    )
        for department in self.federation.homes:
            out = self.workdir / "audit" / department
            exported = self.admin(department, "ledger.export", {"out": str(out)})
            self.report.ledgers[department] = int(exported["entries"])
            bundles.append(out)
        self.console.print(
            "  each ledger goes on after its checkpoint (cosignatures it gives later, the export "
            "itself): those entries are hash-chained and verified too, and the next checkpoint "
            "covers them"
        )
        report = verify_bundle(bundles, ca_pem=self.federation.ca_pem.read_bytes())
        self.report.verification = (
            f"{_count(report.entries, 'entry', 'entries')} in "
            f"{_count(len(report.bundles), 'ledger')} verified offline; "
            f"{_count(report.shares_checked, 'share')} cross-checked between sender and "
            f"receiver; {_count(report.witnessed_checked, 'witnessed checkpoint')} matched "
            "against the logs their witnesses cosigned"
        )
        self.report.artefacts["audit bundles"] = self.workdir / "audit"
        return (
            f"{published}/{len(self.federation.homes)} checkpoints published with "
            f"≥{self.plan.witness_threshold} cosignatures; {self.report.verification}"
        )

    def stop(self) -> None:
        if self.fed is not None:
            self.fed.stop_all()

    def explain_kept(self) -> None:
        """Tell how to reach the nodes left running, and how to stop them."""
        homes = self.federation.homes
        coordinator = homes[self.plan.coordinator]
        provider = homes[next(d for d in homes if d != self.plan.coordinator)]
        self.console.rule("[bold]The federation keeps running (--keep)")
        for line in (
            "Each node is a 'fednode serve' process; reach one with --home. Try:",
            f"  fednode status --home {coordinator}",
            f"  fednode dataset list --home {provider}",
            f"  fednode ledger show --home {provider}",
            f"Stop them all (each stops cleanly on SIGTERM):  {_stop_command(self.workdir)}",
            "Running 'fednode demo' again in this folder also stops them first.",
        ):
            self.console.print(line, highlight=False, soft_wrap=True)


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 share``, ``2 shares``: the number with the noun in the right form."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def progress_line(event: dict[str, Any]) -> str | None:
    """One line for an ``fl.launch`` progress event, or None for events not shown.

    A phase event names its round and its message type (``train``,
    ``evaluate``); phases without metrics (the SecAgg+ stages) are not shown.
    """
    kind = event.get("event")
    if kind == "participant":
        state = f"joined with {event['rows']} rows" if event["ok"] else event["error"]
        return f"{event['department']}: {state}"
    if kind == "phase" and event.get("metrics"):
        metrics = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in event["metrics"].items()
        )
        # SecAgg+ reports training in a stage such as "train/collect_masked_vectors".
        kind = str(event.get("type") or "phase").split("/", 1)[0]
        return f"round {event.get('round')} {kind}: {metrics}"
    return None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """A flat TOML table; the job file needs nothing richer."""
    return ["", f"[{name}]", *(f"{key} = {_toml_value(v)}" for key, v in values.items())]


def _stop_command(workdir: Path) -> str:
    return f"kill $(cat {workdir / 'federation'}/*/node.pid)"


def _is_demo_node(pid: int, home: Path) -> bool:
    """Whether ``pid`` is ``fednode serve`` for ``home`` (and not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and str(home).encode() in argv


def stop_left_running(workdir: Path, timeout: float = 20.0) -> list[str]:
    """Stop the nodes an earlier ``fednode demo --keep`` left running in ``workdir``.

    Each gets SIGTERM and stops cleanly; a node is done once its pid file is
    gone, the last thing it removes.

    Returns:
        The departments stopped.

    Raises:
        ConfigError: a node answers on its admin socket but its pid file does
            not name its process, or it did not stop in time.
    """
    stopped: list[str] = []
    for config in sorted((workdir / "federation").glob("*/node.toml")):
        home = config.parent
        if not is_running(home):
            continue
        pid_file = home / "node.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid <= 0 or not _is_demo_node(pid, home):
            raise ConfigError(
                f"a node still runs in {home}, and {pid_file} does not name its process",
                hint=f"stop it yourself ('fednode status --home {home}' names it), then run "
                "the demo again",
            )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_file.exists():
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the node in {home} (pid {pid}) did not stop within {timeout:.0f}s",
                    hint=f"stop it with 'kill -9 {pid}', then run the demo again",
                )
            time.sleep(0.1)
        stopped.append(home.name)
    return stopped


def prepare_workdir(workdir: Path) -> list[str]:
    """Empty ``workdir`` if it holds a previous demo; refuse to touch anything else.

    Nodes an earlier ``--keep`` run left running there are stopped first;
    deleting their homes under them would leave them running with no way to
    reach them.

    Returns:
        The departments whose nodes were stopped.

    Raises:
        ConfigError: the folder exists, is not empty, and was not made by the
            demo; or a node left running there could not be stopped.
    """
    stopped: list[str] = []
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / _MARKER).exists():
            raise ConfigError(
                f"{workdir} exists and was not made by 'fednode demo'",
                hint="pass another --workdir, or remove the folder",
            )
        stopped = stop_left_running(workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).write_text("made by fednode demo; safe to delete\n")
    return stopped


def run_demo(plan: DemoPlan, workdir: Path, *, keep: bool, console: Console) -> DemoReport:
    stopped = prepare_workdir(workdir)
    if stopped:
        console.print(
            f"stopped the nodes an earlier 'fednode demo --keep' left running in {workdir}: "
            f"{', '.join(stopped)}"
        )
    demo = Demo(plan, workdir, console)
    try:
        demo.step("1. Federation authority: CA, certificates, directory", demo.provision)
        demo.step("2. Department nodes start and authenticate each other", demo.start_nodes)
        demo.step("3. Departments catalogue their data (it stays in place)", demo.register_datasets)
        demo.step(
            "4. Sharing agreements: provider signs, consumer countersigns", demo.sign_agreements
        )
        demo.step("5. Encrypted Arrow share under an agreement", demo.encrypted_share)
        demo.step("6. Federated learning with SecAgg+ and DP", demo.federated_job)
        demo.step(
            "7. Witnesses cosign checkpoints; auditor verifies offline", demo.witness_and_audit
        )
    finally:
        if not keep:
            demo.stop()
    if keep:
        demo.explain_kept()
    return demo.report


def _dp_caveat(dp: dict[str, Any]) -> str:
    """The plan's DP values are for show; say what they guarantee, not only what they state."""
    try:
        config = dp_config(dp)
    except JobFileError:
        return ""
    if config.weakness() is None:
        return f", epsilon {config.epsilon:g}"
    return (
        f", noise for epsilon {config.epsilon:g} at sensitivity {config.sensitivity:g}; a "
        f"whole clipped update gets epsilon {config.effective_epsilon:.4g}: demo-strength "
        "noise, not a privacy budget"
    )
