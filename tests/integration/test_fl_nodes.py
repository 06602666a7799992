"""Federated jobs across real fednode processes: mTLS, real agreements, SecAgg+, DP, faults.

One coordinator (data-bureau) and three participants (traffic,
public-security, health), each a ``fednode serve`` process with its own
certificate, catalog, agreements and ledger. The participants register their
seed ``road_safety`` tables, sign ``federated`` agreements that the
coordinator countersigns, and approve the sample app's FAB; the coordinator
runs ``fednode fl launch`` through its admin socket.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from node.fl.coordinator import run_job
from node.fl.errors import JobFailedError
from node.fl.grid import GrpcSender
from node.fl.jobfile import load_job_file
from node.fl.wire import DpConfig
from node.localfed import LocalFederation
from node.server.app import NodeProcess
from tests.integration.helpers import fednode
from tests.integration.test_fl_harness import (
    COORDINATOR,
    PARTICIPANTS,
    SEED_DATA,
    fl_federation,
    ledger,
    write_job,
)
from tests.unit.fl.fl_fakes import task
from tests.unit.fl.secagg_check import Recording, check_secagg_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Ten times the app's default of 50: slow rounds, and the most a participant takes
# by default ([fl] max_run_config_factor).
SLOW_TRAINING = "[run-config]\nlocal-epochs = 500"
DP = {"clipping-norm": 25.0, "sensitivity": 0.05, "epsilon": 5.0, "delta": 1e-5}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFederation, dict[str, str]]]:
    fed, agreements = fl_federation(tmp_path_factory.mktemp("flfed"))
    try:
        yield fed, agreements
    finally:
        fed.stop_all()


def _launch(fed: LocalFederation, job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            "fl",
            "launch",
            str(job),
            "--home",
            str(fed.homes[COORDINATOR]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _started_jobs(home: Path) -> set[str]:
    """Ids of the jobs a coordinator's ledger records as started (an earlier job's end
    record may still land while a test runs; its start is long recorded)."""
    return {
        e["detail"]["job_id"] for e in ledger(home, "fl.job") if e["detail"].get("phase") == "start"
    }


def _summary(job: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((job.parent / "results" / "summary.json").read_text())
    return result


def test_secagg_and_dp_job_over_mtls_with_ledger_records(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    job = write_job(tmp_path / "job.toml", agreements, rounds=2, min_nodes=3, secagg=True, dp=DP)
    result = fednode("fl", "launch", job, "--home", fed.homes[COORDINATOR], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train/collect_masked_vectors ok: health, public-security, traffic" in result.stdout
    # These DP values are for show, and the launch says what they really give.
    assert "a clipped update gets epsilon 2500, not 5" in " ".join(result.stdout.split())
    summary = _summary(job)
    assert summary["outcome"] == "ok" and summary["rounds"] == 2 and summary["secagg"] is True
    status = ("fl", "status", summary["job_id"], "--home", fed.homes[COORDINATOR])
    shown = fednode(*status, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "finished"
    told = " ".join(fednode(*status, check=True).stdout.split())  # the same job, for people
    assert f"job {summary['job_id']}" in told and "finished, outcome ok" in told
    assert "SecAgg+ (masked updates)" in told and "2 of 2" in told
    assert (job.parent / "results" / "model.npz").exists()
    expected_dp = DpConfig(25.0, 0.05, 5.0, 1e-5).to_record()
    assert summary["dp"] == expected_dp
    jobs = ledger(fed.homes[COORDINATOR], "fl.job")
    mine = [e for e in jobs if json.dumps(e).find(summary["job_id"]) >= 0]
    assert len(mine) == 2 and json.dumps(mine).count('"noise_stddev"') == 2
    for department in PARTICIPANTS:
        tasks = [
            e
            for e in ledger(fed.homes[department], "fl.task")
            if summary["job_id"] in json.dumps(e)
        ]
        replies = [
            e
            for e in ledger(fed.homes[department], "fl.reply")
            if summary["job_id"] in json.dumps(e)
        ]
        # Per round: four SecAgg+ stages and one evaluation.
        assert len(tasks) == len(replies) == 10
        admitted = [
            e
            for e in ledger(fed.homes[department], "fl.admitted")
            if summary["job_id"] in json.dumps(e)
        ]
        assert len(admitted) == 1 and admitted[0]["agreement"] == agreements[department]
        assert all(expected_dp["noise_stddev"] in json.dumps(e) for e in tasks)
        assert all('"sha256:' in json.dumps(e) for e in replies)


def test_secagg_coordinator_receives_only_masked_vectors_over_mtls(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    """The coordinator runs in this process so the test can see every reply its NodeGrid gets."""
    fed, agreements = setup
    fed.stop(COORDINATOR)
    coordinator = NodeProcess(fed.homes[COORDINATOR])
    coordinator.start()
    senders: list[Recording] = []

    def factory(job_id: str) -> Recording:
        senders.append(Recording(GrpcSender(coordinator.runtime.peer_channel, job_id)))
        return senders[-1]

    try:
        job = load_job_file(
            write_job(tmp_path / "job.toml", agreements, rounds=2, min_nodes=3, secagg=True)
        )
        summary = run_job(coordinator.runtime, job, lambda _e: None, sender_factory=factory)
    finally:
        coordinator.stop()
        fed.start(COORDINATOR)
        fed.wait_ready([COORDINATOR])
    assert summary["outcome"] == "ok", summary["error"]
    splits = {
        d: task.split_table(pq.read_table(SEED_DATA / d / "road_safety.parquet"))
        for d in PARTICIPANTS
    }
    check_secagg_run(senders[0].pairs, splits, rounds=2)


def test_unapproved_app_is_refused_by_every_participant(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    app = tmp_path / "other-app"
    source = Path(__file__).resolve().parents[2] / "seeds" / "apps" / "traffic-risk"
    subprocess.run(["cp", "-r", str(source), str(app)], check=True)
    toml = app / "pyproject.toml"
    toml.write_text(toml.read_text().replace('version = "1.1.0"', 'version = "9.9.9"'))
    job = write_job(tmp_path / "job.toml", agreements, rounds=1, min_nodes=3)
    job.write_text(job.read_text().replace(f'app = "{source}"', f'app = "{app}"'))
    result = fednode("fl", "launch", job, "--home", fed.homes[COORDINATOR], timeout=120)
    assert result.returncode == 10, result.stdout + result.stderr  # federated-job failure
    assert "no participant joined" in result.stderr
    assert result.stdout.count("refused") == 3 and "not approved" in result.stdout
    denied = ledger(fed.homes["traffic"], "access.denied")
    assert any("not approved" in json.dumps(e) for e in denied)


def _kill_after(
    process: subprocess.Popen[str], fed: LocalFederation, victim: str, marker: str
) -> str:
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            fed.processes[victim].send_signal(signal.SIGKILL)
            fed.processes[victim].wait()
            break
    rest, _ = process.communicate(timeout=300)
    return "".join(seen) + rest


def test_a_killed_node_fails_the_job_clearly_when_minimums_are_unmet(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    job = write_job(tmp_path / "job.toml", agreements, rounds=15, min_nodes=3)
    started = time.monotonic()
    output = _kill_after(_launch(fed, job), fed, "health", "round 2 evaluate")
    try:
        assert "only 2 of 3 participants remain" in output
        assert time.monotonic() - started < 120
        summary = _summary(job)
        assert summary["outcome"] == "error" and "health" in summary["error"]
        end = [
            e
            for e in ledger(fed.homes[COORDINATOR], "fl.job")
            if summary["job_id"] in json.dumps(e)
        ]
        assert '"error"' in json.dumps(end[-1])
        survivors = ledger(fed.homes["traffic"], "fl.reply")
        assert any(summary["job_id"] in json.dumps(e) for e in survivors)
        for department in ("traffic", "public-security"):
            [ended] = _ended(fed, department, summary["job_id"])
            assert "only 2 of 3 participants remain" in ended["detail"]["reason"]
    finally:
        fed.start("health")
        fed.wait_ready(["health"])


def test_a_killed_node_leaves_the_round_complete_when_minimums_hold(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    # Long enough local training that the kill lands while round 3's training is in flight.
    job = write_job(tmp_path / "job.toml", agreements, rounds=8, min_nodes=2, extra=SLOW_TRAINING)
    process = _launch(fed, job)
    output = _kill_after(process, fed, "public-security", "round 2 evaluate")
    try:
        assert process.returncode == 0, output
        summary = _summary(job)
        assert summary["outcome"] == "ok" and summary["rounds"] == 8
        rounds = json.loads((job.parent / "results" / "rounds.json").read_text())
        last = next(r for r in rounds if r["round"] == 8 and r["type"] == "train")
        assert last["ok"] == ["health", "traffic"]
        hit = [r for r in rounds if "public-security" in r["failed"]]
        assert hit, "the killed node's failure is in the per-round record"
        # It died mid-round, with messages it had been sent in flight, and that phase still
        # ended with the others. (Training or evaluation: where the kill lands is timing.)
        assert hit[0]["type"] in ("train", "evaluate") and hit[0]["ok"] == ["health", "traffic"]
        assert isinstance(hit[0]["round"], int) and hit[0]["round"] >= 3
        end = [
            e
            for e in ledger(fed.homes[COORDINATOR], "fl.job")
            if summary["job_id"] in json.dumps(e)
        ]
        assert '"ok"' in json.dumps(end[-1])
    finally:
        fed.start("public-security")
        fed.wait_ready(["public-security"])


def test_a_mistake_in_the_job_file_is_a_usage_error_and_starts_nothing(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    jobs_before = _started_jobs(fed.homes[COORDINATOR])
    job = write_job(tmp_path / "job.toml", agreements, rounds=1, min_nodes=3, extra="min-node = 2")
    result = fednode("fl", "launch", job, "--home", fed.homes[COORDINATOR], timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    first, hint = result.stderr.splitlines()
    assert str(job) in first and "[strategy].min-node" in first and "'min-nodes'" in first
    assert hint.startswith("hint: the app declares:")
    assert _started_jobs(fed.homes[COORDINATOR]) == jobs_before
    assert not (tmp_path / "results").exists()


def test_a_second_launch_into_the_same_output_folder_is_refused_unless_overwrite(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    job = write_job(tmp_path / "job.toml", agreements, rounds=1, min_nodes=3)
    home = fed.homes[COORDINATOR]
    fednode("fl", "launch", job, "--home", home, timeout=120, check=True)
    first = _summary(job)
    jobs_before = _started_jobs(home)
    again = fednode("fl", "launch", job, "--home", home, timeout=120)
    assert again.returncode == 2, again.stdout + again.stderr
    error, hint = again.stderr.splitlines()
    assert str(job.parent / "results") in error and first["job_id"] in error
    assert "--overwrite" in hint
    assert _started_jobs(home) == jobs_before, "the refused launch started a job"
    assert _summary(job) == first
    replaced = fednode("fl", "launch", job, "--overwrite", "--home", home, timeout=120)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert _summary(job)["job_id"] != first["job_id"]
    assert "--overwrite" in fednode("fl", "launch", "--help").stdout


def test_ctrl_c_during_launch_ends_the_job_at_every_participant(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    job = write_job(tmp_path / "job.toml", agreements, rounds=50, min_nodes=3, extra=SLOW_TRAINING)
    process = _launch(fed, job)
    assert process.stdout is not None
    job_id = ""
    for line in process.stdout:
        if line.startswith("job ") and not job_id:
            job_id = line.split()[1]
        if "round 1 " in line:
            break
    assert job_id, "the launch printed no job id"
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the terminal's command
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, rest
    interrupted = time.monotonic()
    # Each participant records the end promptly: its job session does not linger.
    for department in PARTICIPANTS:
        while True:
            ended = [
                e
                for e in ledger(fed.homes[department], "fl.ended")
                if e["detail"]["job_id"] == job_id
            ]
            if ended:
                break
            assert time.monotonic() - interrupted < 30, f"{department} never learnt the job ended"
            time.sleep(0.2)
        assert ended[0]["outcome"] == "error" and ended[0]["peer"] == COORDINATOR
        assert "cancelled" in ended[0]["detail"]["reason"]

    # The coordinator records the end once every participant has answered.
    def ends() -> list[dict[str, Any]]:
        jobs = ledger(fed.homes[COORDINATOR], "fl.job")
        return [
            e for e in jobs if e["detail"]["job_id"] == job_id and e["detail"]["phase"] == "end"
        ]

    while not ends():
        assert time.monotonic() - interrupted < 30, "the cancelled job never ended"
        time.sleep(0.2)
    assert ends()[0]["outcome"] == "error"
    summary = _summary(job)
    assert summary["outcome"] == "error" and "cancelled" in summary["error"]


# The failed job's ServerApp thread (Flower's legacy client manager) polls the closed Grid
# once more and dies on its error; that is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_node_lost_during_secagg_setup_fails_the_job_naming_it(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    """The coordinator runs in this process so the kill lands exactly at the setup stage."""
    fed, agreements = setup
    fed.stop(COORDINATOR)
    coordinator = NodeProcess(fed.homes[COORDINATOR])
    coordinator.start()

    class KillHealthAtSetup:
        def __init__(self, job_id: str) -> None:
            self.inner = GrpcSender(coordinator.runtime.peer_channel, job_id)

        def __call__(self, department: str, message: Any, timeout: float) -> Any:
            if department == "health" and fed.processes["health"].poll() is None:
                fed.processes["health"].send_signal(signal.SIGKILL)
                fed.processes["health"].wait()
            return self.inner(department, message, timeout)

    try:
        job = load_job_file(
            write_job(tmp_path / "job.toml", agreements, rounds=2, min_nodes=2, secagg=True)
        )
        with pytest.raises(JobFailedError, match="health dropped out during SecAgg\\+ setup"):
            run_job(coordinator.runtime, job, lambda _e: None, sender_factory=KillHealthAtSetup)
    finally:
        coordinator.stop()
        fed.start(COORDINATOR)
        fed.start("health")
        fed.wait_ready([COORDINATOR, "health"])
    summary = _summary(tmp_path / "job.toml")
    assert summary["outcome"] == "error" and "in the setup stage" in summary["error"]
    end = [
        e for e in ledger(fed.homes[COORDINATOR], "fl.job") if summary["job_id"] in json.dumps(e)
    ]
    assert "health dropped out during SecAgg+ setup" in end[-1]["detail"]["reason"]


def test_participants_end_a_job_whose_coordinator_was_killed(
    setup: tuple[LocalFederation, dict[str, str]], tmp_path: Path
) -> None:
    fed, agreements = setup
    idle = 2.0
    job = write_job(tmp_path / "job.toml", agreements, rounds=50, min_nodes=3, extra=SLOW_TRAINING)
    job.write_text(job.read_text().replace("node-wait = 5", f"node-wait = 5\nidle = {idle}"))
    process = _launch(fed, job)
    assert process.stdout is not None
    job_id, since = "", 0.0
    for line in process.stdout:
        if line.startswith("job ") and not job_id:
            job_id, since = line.split()[1], time.monotonic()
        # Let the job run past its idle limit twice over: KeepJob holds it open.
        if job_id and "round " in line and time.monotonic() - since > 2 * idle:
            break
    assert job_id, "the launch printed no job id"
    assert all(not _ended(fed, d, job_id) for d in PARTICIPANTS), "ended while kept alive"
    fed.processes[COORDINATOR].send_signal(signal.SIGKILL)
    fed.processes[COORDINATOR].wait()
    killed = time.monotonic()
    try:
        process.communicate(timeout=30)
        assert process.returncode != 0  # the launch lost its node
        for department in PARTICIPANTS:
            while not (ended := _ended(fed, department, job_id)):
                assert time.monotonic() - killed < idle + 15, f"{department} kept the job"
                time.sleep(0.1)
            # The last KeepJob came at most a quarter of the limit before the kill.
            assert time.monotonic() - killed >= idle * 3 / 4
            assert ended[0]["outcome"] == "error" and ended[0]["peer"] == COORDINATOR
            reason = ended[0]["detail"]["reason"]
            assert f"the coordinator {COORDINATOR} went silent" in reason and "2 s" in reason
            assert not (fed.homes[department] / "data" / "fl" / "jobs" / job_id).exists()
    finally:
        fed.start(COORDINATOR)
        fed.wait_ready([COORDINATOR])


def _ended(fed: LocalFederation, department: str, job_id: str) -> list[dict[str, Any]]:
    """The participant's fl.ended records of one job."""
    return [e for e in ledger(fed.homes[department], "fl.ended") if e["detail"]["job_id"] == job_id]
