"""Helpers for the federated-learning integration tests and benchmarks (this module holds no tests).

* :func:`fl_federation` provisions a real federation (CA, certificates,
  directory), starts real ``fednode serve`` processes, registers each
  participant's seed ``road_safety`` table, and signs ``federated``
  agreements with the coordinator through the real CLI.
* :class:`DeploymentEngine` runs Flower's own Deployment Engine: one
  ``flower-superlink`` and one ``flower-supernode`` per department, each a real
  process on loopback (insecure mode), each node reading the same Parquet file
  through ``--node-config data-path=...``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.admin.client import invoke
from node.localfed import DepartmentSpec, LocalFederation, free_port, provision
from tests.integration.helpers import fednode

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "seeds" / "apps" / "traffic-risk"
SEED_DATA = ROOT / "seeds" / "data"
COORDINATOR = "data-bureau"
#: Participating departments (their seed folders have the same names).
PARTICIPANTS = ["traffic", "public-security", "health"]
VENV_BIN = Path(sys.executable).parent


def fl_federation(root: Path) -> tuple[LocalFederation, dict[str, str]]:
    """A running federation with a coordinator and three participants; returns agreement ids."""
    specs = [DepartmentSpec(COORDINATOR, "Municipal Big Data Bureau")] + [
        DepartmentSpec(d) for d in PARTICIPANTS
    ]
    fed = provision(root, "riverside", specs)
    for department in fed.homes:
        fed.start(department)
    fed.wait_ready()
    fab = root / "traffic-risk.fab"
    fednode("app", "build", APP, "--out", fab, "--home", fed.homes[COORDINATOR], check=True)

    def enrol(department: str) -> str:
        home = fed.homes[department]
        table = SEED_DATA / department / "road_safety.parquet"
        fednode("dataset", "add", "road_safety", table, "--home", home, check=True)
        columns = [
            "night", "rush_hour", "weekend", "flow_index", "heavy_vehicle_share", "speed_index",
            "pedestrian_index", "rain_index", "cycle_index", "elderly_share", "violation_index",
            "split", "incident",
        ]  # fmt: skip
        out = root / f"{department}.agreement"
        fednode(
            "agreement", "create", "--consumer", COORDINATOR, "--dataset", "road_safety",
            "--purpose-code", "road-safety-model", "--purpose", "intersection risk model",
            "--valid-until", "+1d", "--mode", "federated",
            *[a for c in columns for a in ("--column", f"{c}=plain")],
            "--out", out, "--home", home, check=True,
        )  # fmt: skip
        coordinator = fed.homes[COORDINATOR]
        fednode("agreement", "countersign", out, "--push", "--home", coordinator, check=True)
        fednode("app", "approve", fab, "--home", home, check=True)
        listed = invoke(home, "agreement.list", {})
        rows = listed["agreements"] if isinstance(listed, dict) else listed
        return _agreement_id([a for a in rows if "active" in json.dumps(a)][-1])

    # Each department's operator works independently, so their steps run side by side.
    with ThreadPoolExecutor(max_workers=len(PARTICIPANTS)) as pool:
        agreements = dict(zip(PARTICIPANTS, pool.map(enrol, PARTICIPANTS), strict=True))
    return fed, agreements


def _agreement_id(row: dict[str, Any]) -> str:
    text = json.dumps(row)
    match = re.search(r"agr-[0-9a-f]{32}", text)
    if not match:
        raise AssertionError(f"no agreement id in {text}")
    return match.group(0)


def write_job(
    path: Path,
    agreements: dict[str, str],
    *,
    rounds: int,
    min_nodes: int,
    secagg: bool = False,
    dp: dict[str, float] | None = None,
    departments: list[str] | None = None,
    extra: str = "",
) -> Path:
    lines = [
        "[job]",
        'name = "road-safety"',
        f'app = "{APP}"',
        f"rounds = {rounds}",
        f'output = "{path.parent / "results"}"',
        f"secagg = {'true' if secagg else 'false'}",
        "[job.timeouts]",
        "message = 60",
        "node-wait = 5",
        "[strategy]",
        f"min-nodes = {min_nodes}",
        extra,
    ]
    if dp:
        lines.append("[dp]")
        lines += [f"{k} = {v}" for k, v in dp.items()]
    for department in departments or PARTICIPANTS:
        lines += [
            "[[participants]]",
            f'department = "{department}"',
            'dataset = "road_safety"',
            f'agreement = "{agreements[department]}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def ledger(home: Path, event: str) -> list[dict[str, Any]]:
    """A running node's ledger entries of one event type (its admin command ``ledger.show``)."""
    result = invoke(home, "ledger.show", {"limit": 10000, "event": event})
    return [e for e in result["entries"] if e.get("event") == event]


@dataclass
class DeploymentEngine:
    """Flower's Deployment Engine on loopback: a SuperLink and one SuperNode per data file."""

    root: Path
    data: list[Path]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = 0

    def _env(self, home: str) -> dict[str, str]:
        return {
            **os.environ,
            "FLWR_HOME": str(self.root / home),
            # Flower starts its helper executables by name.
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # Loopback must never go through a proxy.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def _spawn(self, args: list[str], home: str) -> None:
        log = (self.root / f"{home}.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                args, stdout=log, stderr=log, env=self._env(home), start_new_session=True
            )
        )
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._spawn(
            [str(VENV_BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
             "--port", str(self.port), "--disable-runtime-dependency-installation"],
            "superlink",
        )  # fmt: skip
        for index, path in enumerate(self.data):
            self._spawn(
                [str(VENV_BIN / "flower-supernode"), "--insecure",
                 "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port()),
                 "--node-config", f'data-path="{path}"'],
                f"supernode{index}",
            )  # fmt: skip
        config = self.root / "cli" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        deadline = time.monotonic() + timeout
        log = self.root / "superlink.log"
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if text.count("Activated node_id") >= len(self.data):
                return
            time.sleep(0.5)
        raise AssertionError(f"Deployment Engine did not come up:\n{log.read_text()[-3000:]}")

    def run(
        self, app: Path, run_config: str, timeout: float = 600.0
    ) -> tuple[list[float], dict[str, Any]]:
        """``flwr run --stream``; returns per-round seconds (from streamed log lines), the run."""
        started = time.monotonic()
        process = subprocess.Popen(
            [
                str(VENV_BIN / "flwr"),
                "run",
                str(app),
                "local",
                "--run-config",
                run_config,
                "--stream",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env("cli"),
            start_new_session=True,
        )
        marks: list[float] = []
        lines: list[str] = []
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if "[ROUND " in line:
                marks.append(time.monotonic())
            if "Strategy execution finished" in line:
                marks.append(time.monotonic())
                break
            if time.monotonic() - started > timeout:
                break
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        runs = json.loads(self.flwr("ls", "local", "--format", "json"))["runs"]
        run = max(runs, key=lambda r: r["pending-at"])
        deadline = time.monotonic() + 60
        while not run["status"].startswith("finished") and time.monotonic() < deadline:
            time.sleep(1)
            run = next(
                r
                for r in json.loads(self.flwr("ls", "local", "--format", "json"))["runs"]
                if r["run-id"] == run["run-id"]
            )
        run["log"] = "".join(lines)
        return [b - a for a, b in itertools.pairwise(marks)], run

    def flwr(self, *args: str) -> str:
        result = subprocess.run(
            [str(VENV_BIN / "flwr"), *args], capture_output=True, text=True, env=self._env("cli"),
            timeout=120, check=True,
        )  # fmt: skip
        return result.stdout

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
