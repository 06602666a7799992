"""``fednode fl status JOB`` for people: every field comes from the status and summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from node.cli.job_report import job_report


def _plain(status: dict[str, Any]) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(job_report(status))
    return console.export_text()


def _finished() -> dict[str, Any]:
    return {
        "job_id": "road-safety-20261128T192744Z-10327d",
        "name": "road-safety",
        "state": "finished",
        "round": 5,
        "started_at": 1795894064,
        "finished_at": 1795894066,
        "output": "/srv/fl/road-safety",
        "participants": ["traffic", "health"],
        "summary": {
            "app": "fednode/traffic-risk",
            "app_version": "1.1.0",
            "fab_sha256": "9f7179087c80c546643efb59977c6681",
            "outcome": "ok",
            "rounds": 5,
            "seconds": 2.432,
            "secagg": True,
            "dp": {"mechanism": "gaussian/local", "epsilon": "5.0", "delta": "1e-05"},
            "final_metrics": {
                "evaluate": {"eval-acc": 0.822052067, "loss": 0.4567}, "train/setup": {},
            },
            "participants": [
                {"department": "traffic", "joined": True, "rows": 4000, "dataset": "road_safety",
                 "agreement": "agr-5b3e", "error": None},
                {"department": "health", "joined": False, "rows": 0, "dataset": "[red]x[/]",
                 "agreement": "agr-6c90", "error": "did not answer within 30 s"},
            ],
        },
    }  # fmt: skip


def test_a_finished_job_reads_as_sentences_with_its_numbers() -> None:
    text = _plain(_finished())
    assert "job road-safety-20261128T192744Z-10327d (road-safety): finished, outcome ok" in text
    assert "fednode/traffic-risk 1.1.0 (FAB sha256 9f7179087c80…)" in text
    assert "2026-11-28 19:27:44 UTC, finished 2026-11-28 19:27:46 UTC (2.4 s)" in text
    assert "5 of 5" in text
    assert "SecAgg+ (masked updates)" in text
    assert "gaussian/local, epsilon 5.0, delta 1e-05" in text
    assert (
        "traffic" in text and "joined  4,000 rows, dataset road_safety, agreement agr-5b3e" in text
    )
    assert "did not join" in text and "did not answer within 30 s" in text
    assert "evaluate: eval-acc=0.8221, loss=0.4567" in text
    assert "train/setup" not in text  # stages without metrics are left out
    assert "/srv/fl/road-safety (model.npz, rounds.json, summary.json)" in text


def test_values_are_never_read_as_markup() -> None:
    # A dataset name from a peer must print as typed, not restyle the console.
    assert "dataset [red]x[/]" in _plain(_finished())


def test_an_interrupted_job_without_summary_shows_what_is_known() -> None:
    status = {
        "job_id": "j-1",
        "name": "j",
        "state": "interrupted",
        "round": 2,
        "started_at": 1795894064,
        "participants": ["traffic", "health"],
        "error": "the node stopped during the job; launch it again",
    }
    text = _plain(status)
    assert "j-1 (j): interrupted" in text
    assert "2 of ?" in text
    assert "participants  traffic, health" in text
    assert "privacy" not in text
    assert "error         the node stopped during the job; launch it again" in text
    assert "SecAgg" not in text  # unknown without a summary: not guessed
