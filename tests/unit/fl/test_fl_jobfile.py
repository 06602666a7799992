"""Job files and the approved-apps list: valid input parses, every bad input gets a clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from node.errors import ConfigError
from node.fl.approvals import ApprovalStore
from node.fl.bundle import build_bundle, fused_run_config
from node.fl.errors import AppBundleError, JobFileError
from node.fl.jobfile import DEFAULT_IDLE_LIMIT, load_job_file, parse_job
from tests.unit.fl.fl_fakes import APP

GOOD = """
[job]
name = "risk"
app = "app"
rounds = 4
secagg = true
output = "out"
[job.timeouts]
message = 30
[strategy]
min-nodes = 2
[run-config]
learning-rate = 0.25
[dp]
clipping-norm = 1.0
epsilon = 5.0
delta = 1e-5
[[participants]]
department = "traffic"
dataset = "incidents"
agreement = "agr-00000000000000000000000000000001"
[[participants]]
department = "health"
dataset = "visits"
agreement = "agr-00000000000000000000000000000002"
"""


def test_a_job_file_parses_with_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(GOOD)
    job = load_job_file(tmp_path / "job.toml")
    assert job.app == tmp_path / "app" and job.output == tmp_path / "out"
    assert job.overrides == {"min-nodes": 2, "learning-rate": 0.25, "num-server-rounds": 4}
    assert job.secagg and job.dp is not None and job.dp.sensitivity == 1.0
    assert job.message_timeout == 30.0 and job.participants[0].agreement == "agr-" + "0" * 31 + "1"
    assert job.idle_limit == DEFAULT_IDLE_LIMIT == 300.0


def test_the_idle_limit_is_set_in_job_timeouts(tmp_path: Path) -> None:
    job = parse_job(_doc(job={"app": "a", "timeouts": {"idle": 2.5}}), tmp_path)
    assert job.idle_limit == 2.5
    assert parse_job(_doc(job={"app": "a", "timeouts": {"idle": 60}}), tmp_path).idle_limit == 60.0


PARTICIPANT = {"department": "a", "dataset": "d", "agreement": "agr-" + "a" * 32}


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"job": {"app": "app"}, "participants": [PARTICIPANT]}
    for key, value in changes.items():
        doc[key] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({}, r"no \[job\] table"),
        (_doc(job={}), "needs a non-empty string 'app'"),
        (_doc(participants=[]), "lists no"),
        (_doc(participants=[{"department": "a", "dataset": "d"}]), "'agreement'"),
        (_doc(participants=[PARTICIPANT] * 2), "listed twice"),
        (
            _doc(participants=[{**PARTICIPANT, "agreement": "agr-transport-2026"}]),
            r"participants\[0\].agreement 'agr-transport-2026' is not an agreement id",
        ),
        (_doc(participants=[{**PARTICIPANT, "dataset": "Incidents!"}]), "is not a dataset name"),
        (_doc(job={"app": "a", "rounds": 0}), "positive integer"),
        (_doc(job={"app": "a", "secagg": "yes"}), "true or false"),
        (_doc(job={"app": "a", "timeouts": {"message": -1}}), "positive number"),
        (_doc(dp={"clipping-norm": 1.0, "epsilon": 1.0, "delta": 2.0}), "0 < delta < 1"),
        (_doc(dp={"epsilon": 1.0, "delta": 0.1}), "clipping-norm must be a positive"),
        (_doc(strategy={"x": [1]}), "must be a scalar"),
        (
            _doc(job={"app": "a", "sec-agg": True}),
            r"\[job\] has no key 'sec-agg'; did you mean 'secagg'",
        ),
        (_doc(job={"app": "a", "round": 2}), r"did you mean 'rounds'"),
        (_doc(job={"app": "a", "timeouts": {"nodewait": 5}}), r"did you mean 'node-wait'"),
        (_doc(job={"app": "a", "timeouts": {"idel": 5}}), r"did you mean 'idle'"),
        *[
            (
                _doc(job={"app": "a", "timeouts": {"idle": bad}}),
                rf"\[job.timeouts\].idle must be a positive number, got {bad!r}",
            )
            for bad in (0, -5, "soon", True, float("inf"))
        ],
        (
            _doc(job={"app": "a", "timeouts": {"idle": float("nan")}}),
            r"\[job.timeouts\].idle must be a positive number, got nan",
        ),
        (
            _doc(job={"app": "a", "timeouts": {"message": float("nan")}}),
            r"\[job.timeouts\].message must be a positive number",
        ),
        (
            _doc(dp={"clipping-norm": 1.0, "epsilon": 1.0, "delta": 0.1, "eps": 2}),
            r"\[dp\] has no key 'eps'",
        ),
        (
            _doc(dp={"clipping-norm": 1.0, "epsilon": 1.0, "delta": 0.1, "sensitivity": 0}),
            "sensitivity must be a positive",
        ),
        (
            _doc(dp={"clipping-norm": 1.0, "epsilon": 1.0, "delta": 0.1, "sensitivity": "x"}),
            "sensitivity must be a positive",
        ),
        (_doc(participants=[{**PARTICIPANT, "dept": "b"}]), r"participants\[0\] has no key 'dept'"),
        (
            _doc(runconfig={"a": 1}),
            r"the job file has no key 'runconfig'; did you mean 'run-config'",
        ),
        (_doc(strategy={"min-nodes": 5}), "min-nodes = 5 is more than the job's 1 participant"),
        (_doc(**{"run-config": {"min-available-clients": 2}}), "min-available-clients = 2 is more"),
    ],
)
def test_bad_job_files_are_refused(doc: dict[str, Any], match: str, tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=match):
        parse_job(doc, tmp_path)


def test_unreadable_and_non_toml_job_files(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="cannot read"):
        load_job_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[job\n")
    with pytest.raises(JobFileError, match="not valid TOML"):
        load_job_file(tmp_path / "bad.toml")


def test_run_config_is_the_apps_defaults_with_overrides() -> None:
    bundle = build_bundle(APP)
    fused = fused_run_config(bundle, {"num-server-rounds": 9})
    assert fused["num-server-rounds"] == 9 and fused["learning-rate"] == 1.0
    with pytest.raises(JobFileError, match="not present"):
        fused_run_config(bundle, {"no-such-key": 1})


def test_fab_is_built_deterministically_like_flwr_build() -> None:
    assert build_bundle(APP).sha256 == build_bundle(APP).sha256
    with pytest.raises(AppBundleError, match="does not exist"):
        build_bundle(APP / "nope")
    with pytest.raises(AppBundleError, match="not a valid Flower App Bundle"):
        from node.fl.bundle import read_bundle

        read_bundle(b"not a zip")


def test_approvals_persist_and_revoke(tmp_path: Path) -> None:
    fab = tmp_path / "app.fab"
    fab.write_bytes(build_bundle(APP).data)
    store = ApprovalStore(tmp_path / "approved.json")
    approval = store.approve(str(fab))
    assert (
        approval.name == "fednode/traffic-risk"
        and approval.sha256 == hashlib.sha256(fab.read_bytes()).hexdigest()
    )
    assert ApprovalStore(tmp_path / "approved.json").is_approved(approval.sha256)
    other = "ab" * 32
    store.approve("sha256:" + other)
    assert [a.sha256 for a in store.approvals()] == [approval.sha256, other]
    assert store.revoke(other) and not store.revoke(other)
    assert (tmp_path / "approved.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"apps":[],"type":"fednode.approved-apps","v":2}', "unknown approvals format"),
        (b"garbage", "not a valid approvals document"),
        (b'{"apps":[{"sha256":"x"}],"type":"fednode.approved-apps","v":1}', "not a valid"),
    ],
)
def test_a_damaged_approvals_file_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "approved.json").write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        ApprovalStore(tmp_path / "approved.json").approvals()


def test_approving_something_that_is_neither_fab_nor_digest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a FAB file nor a SHA-256"):
        ApprovalStore(tmp_path / "a.json").approve("deadbeef")
