"""``fednode demo`` end to end: it succeeds, reports what moved, and leaves nothing running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.demo.run import prepare_workdir
from node.errors import ConfigError
from node.localfed import DepartmentSpec, provision

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TESTS = ROOT / "tests" / "unit" / "deploy"
sys.path.insert(0, str(DEPLOY_TESTS))

from unit_sandbox import available  # noqa: E402 -- found through the path set just above


def _under_the_unit() -> list[str]:
    """A prefix that runs a command under deploy/systemd/fednode.service's kernel filters.

    Where this machine can apply them (tests/unit/deploy/unit_sandbox.py), the
    demo's nodes run under the same system-call filter, MemoryDenyWriteExecute
    and address families as a node under systemd: a share, SecAgg+ and
    witnessing, end to end.
    """
    if not available():
        return []
    unit = ROOT / "deploy" / "systemd" / "fednode.service"
    return [sys.executable, str(DEPLOY_TESTS / "unit_sandbox.py"), str(unit), "--"]


def _serving(workdir: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [
        line for line in listing.stdout.splitlines() if "serve" in line and str(workdir) in line
    ]


def test_demo_runs_the_whole_federation_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            *_under_the_unit(),
            sys.executable,
            "-m",
            "node.cli.main",
            "demo",
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "What moved" in out and "What stayed local" in out
    assert "refused" in out
    assert "verified offline" in out
    # Counts read as English: "1 share", "2 shares".
    shares = re.search(r"(\d+) (shares?) cross-checked", out)
    assert shares is not None and (shares[1] == "1") == (shares[2] == "share"), out
    # Each round's metrics name the phase they come from.
    assert "round 1 train: train-loss" in out and "round 5 evaluate: eval-acc" in out
    assert "round 1 :" not in out
    assert "checkpoint over its first" in out
    assert "no process left behind" in out
    assert (workdir / "shares").is_dir()
    assert sorted(p.name for p in (workdir / "audit").iterdir())
    assert _serving(workdir) == []


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "was not made by 'fednode demo'" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_rerun_stops_the_nodes_a_kept_demo_left_running(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    prepare_workdir(workdir)
    fed = provision(workdir / "federation", "city", [DepartmentSpec("traffic")])
    process = fed.start("traffic")
    try:
        fed.wait_ready(timeout=60)
        pid_file = fed.homes["traffic"] / "node.pid"
        real_pid = pid_file.read_text()
        # A pid file naming another process: nothing is killed, and the folder stays.
        pid_file.write_text(f"{os.getpid()}\n")
        with pytest.raises(ConfigError, match="does not name its process"):
            prepare_workdir(workdir)
        assert process.poll() is None and fed.homes["traffic"].is_dir()
        pid_file.write_text(real_pid)
        assert prepare_workdir(workdir) == ["traffic"]
        assert process.wait(timeout=5) == 0, "the node stops cleanly on SIGTERM"
        assert sorted(p.name for p in workdir.iterdir()) == [".fednode-demo"]
    finally:
        fed.stop_all()
