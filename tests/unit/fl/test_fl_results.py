"""A job's output folder: earlier results are refused unless overwritten, results appear whole."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.errors import OutputError
from node.fl.coordinator import JobStatusStore, run_job
from node.fl.jobfile import parse_job
from node.fl.results import RoundLog, claim_output, write_results
from tests.unit.fl.fl_fakes import APP, Cluster, agreement_id


def _log(model: bool = True) -> RoundLog:
    log = RoundLog()
    if model:
        log.model = {"w": np.arange(4.0)}
    return log


def _results(folder: Path, job_id: str, model: bool = True) -> None:
    claim = claim_output(folder, overwrite=True)
    try:
        write_results(folder, _log(model), {"job_id": job_id, "outcome": "ok"})
    finally:
        claim.release()


def test_a_folder_holding_results_is_refused_unless_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "results"
    claim_output(out, overwrite=False).release()  # a new or empty folder is fine
    _results(out, "first-job")
    with pytest.raises(
        OutputError, match=f"output folder {out} already holds the results of job first-job"
    ) as e:
        claim_output(out, overwrite=False)
    assert e.value.hint is not None and "--overwrite" in e.value.hint
    assert "[job].output" in e.value.hint
    claim_output(out, overwrite=True).release()


def test_two_jobs_never_write_to_one_folder_at_once(tmp_path: Path) -> None:
    first = claim_output(tmp_path / "results", overwrite=False)
    with pytest.raises(OutputError, match="another job is writing its results"):
        claim_output(tmp_path / "results", overwrite=True)
    first.release()
    claim_output(tmp_path / "results", overwrite=True).release()


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        claim_output(tmp_path / "results", overwrite=True)


def test_an_overwrite_replaces_every_file_of_the_earlier_job(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _results(out, "first-job")
    _results(out, "second-job", model=False)  # this job observed no model
    assert json.loads((out / "summary.json").read_text())["job_id"] == "second-job"
    assert not (out / "model.npz").exists(), "the earlier job's model stayed behind"
    assert sorted(p.name for p in out.iterdir()) == [".fednode-job.lock", "rounds.json",
                                                     "summary.json"]  # fmt: skip


def test_a_crash_while_writing_leaves_no_half_written_or_stale_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results"
    _results(out, "first-job")
    real_replace = Path.replace

    def crash_before_summary(self: Path, target: Any) -> Path:
        if Path(target).name == "summary.json" and self.parent != Path(target).parent:
            raise OSError("disk gone")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_before_summary)
    with pytest.raises(OSError, match="disk gone"):
        _results(out, "second-job")
    monkeypatch.undo()
    # No summary rather than the first job's summary beside the second job's model.
    assert not (out / "summary.json").exists()
    assert np.load(out / "model.npz")["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    json.loads((out / "rounds.json").read_text())  # whole
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not list(out.glob(".fednode-results-*"))


def _job(tmp: Path, cluster: Cluster) -> Any:
    return parse_job(
        {
            "job": {"app": str(APP), "output": str(tmp / "out"), "rounds": 1},
            "strategy": {"min-nodes": 3},
            "participants": [
                {"department": d, "dataset": "incidents", "agreement": agreement_id(d)}
                for d in cluster.nodes
            ],
        },
        tmp,
    )


def test_a_second_job_into_the_same_folder_is_refused_before_anything_starts(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = run_job(cluster.coordinator, _job(tmp_path, cluster), lambda _e: None)
    before = (tmp_path / "out" / "summary.json").read_bytes()
    records = len(cluster.coordinator.audit.entries)
    events: list[dict[str, Any]] = []
    with pytest.raises(OutputError, match=f"already holds the results of job {first['job_id']}"):
        run_job(cluster.coordinator, _job(tmp_path, cluster), events.append)
    assert events == [] and len(cluster.coordinator.audit.entries) == records
    assert all(len(n.runtime.audit.events("fl.admitted")) == 1 for n in cluster.nodes.values())
    assert (tmp_path / "out" / "summary.json").read_bytes() == before
    second = run_job(cluster.coordinator, _job(tmp_path, cluster), lambda _e: None, overwrite=True)
    assert second["outcome"] == "ok" and second["job_id"] != first["job_id"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["job_id"] == second["job_id"]


def test_status_writes_from_many_threads_never_collide(tmp_path: Path) -> None:
    """The ServerApp thread and the job's own thread both write a job's status file."""
    store = JobStatusStore(tmp_path)

    def write(n: int) -> None:
        for i in range(40):
            store.write({"job_id": "job-1", "state": "running", "round": n * 100 + i})

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(write, range(6)))  # re-raises any writer's error
    [status] = store.read_all(None)
    assert status["job_id"] == "job-1"
    assert [p.name for p in store.root.iterdir()] == ["job-1.json"]
