"""``fednode fl status``: job ids stay whole for the next command, and --json lists every job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli.main import main
from node.config import load_config
from node.identity.home import init_home

JOB_ID = "road-safety-20261128T192744Z-10327d"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    from node.fl.coordinator import JobStatusStore

    home = tmp_path / "coordinator"
    init_home(home, federation="city", department="data-bureau", display_name="Data Bureau",
              listen="127.0.0.1:7443", endpoint="127.0.0.1:7443")  # fmt: skip
    JobStatusStore(load_config(home).data_dir).write(
        {
            "job_id": JOB_ID,
            "app": "fednode/traffic-risk",
            "state": "finished",
            "round": 5,
            "participants": ["traffic", "public-security", "civil-affairs", "health"],
            "output": str(tmp_path / "a" / "rather" / "long" / "results" / "folder"),
            "started_at": 1795894064,
        }
    )
    return home


def test_the_job_id_stays_whole_on_an_80_column_terminal(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["fl", "status", "--home", str(home)]) == 0
    assert JOB_ID in capsys.readouterr().out


def test_json_without_a_job_lists_every_job(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fl", "status", "--json", "--home", str(home)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in jobs] == [JOB_ID] and jobs[0]["state"] == "finished"
