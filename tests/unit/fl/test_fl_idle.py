"""Idle limits: the participant's timer, the coordinator's KeepJob, and a silent coordinator."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from node.fl import wire
from node.fl.errors import UnknownJobError
from node.fl.idle import MAX_KEEP_INTERVAL, IdleWatch, JobKeeper, keep_interval
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc
from tests.unit.fl.fl_fakes import COORDINATOR, Cluster, job_spec, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _watch() -> tuple[IdleWatch, Clock, list[tuple[str, float]]]:
    clock = Clock()
    fired: list[tuple[str, float]] = []
    watch = IdleWatch(lambda job, limit: fired.append((job, limit)), clock=clock, background=False)
    return watch, clock, fired


def test_a_job_heard_of_within_its_limit_stays() -> None:
    watch, clock, fired = _watch()
    watch.watch("a", 10.0)
    for _ in range(5):  # 40 s in all, never 10 s of silence
        clock.now += 8.0
        assert watch.tick() == []
        watch.heard("a")
    assert fired == [] and watch.watched == ["a"]


def test_a_silent_job_is_reported_once_at_its_deadline() -> None:
    watch, clock, fired = _watch()
    watch.watch("a", 10.0)
    watch.watch("b", 30.0)
    clock.now += 9.999
    assert watch.tick() == []
    clock.now += 0.001
    assert watch.tick() == ["a"] and fired == [("a", 10.0)]
    clock.now += 100.0
    assert watch.tick() == ["b"]
    assert watch.tick() == [] and fired == [("a", 10.0), ("b", 30.0)]
    watch.heard("a")  # too late: a reported job is not watched again by hearing of it
    clock.now += 100.0
    assert watch.tick() == [] and watch.watched == []


def test_a_forgotten_or_unlimited_job_is_never_reported() -> None:
    watch, clock, fired = _watch()
    watch.watch("ended", 1.0)
    watch.forget("ended")
    watch.watch("unlimited", 0.0)  # a coordinator that sends no limit
    watch.heard("unknown")
    clock.now += 1e6
    assert watch.tick() == [] and fired == [] and watch.watched == []


def test_the_watch_thread_reports_on_time_and_then_exits() -> None:
    fired = threading.Event()
    when: list[float] = []

    def on_idle(job: str, limit: float) -> None:
        when.append(time.monotonic())
        fired.set()

    watch = IdleWatch(on_idle)
    start = time.monotonic()
    watch.watch("a", 0.3)
    assert fired.wait(10), "the idle job was never reported"
    assert when[0] - start >= 0.3
    deadline = time.monotonic() + 10
    while watch._thread is not None:  # nothing left to watch: no thread idles
        assert time.monotonic() < deadline, "the watch thread outlived its last job"
        time.sleep(0.01)


def test_a_failing_callback_does_not_stop_the_watch() -> None:
    reported = threading.Event()
    calls: list[str] = []

    def on_idle(job: str, limit: float) -> None:
        calls.append(job)
        if job == "bad":
            raise RuntimeError("boom")
        reported.set()

    watch = IdleWatch(on_idle)
    watch.watch("bad", 0.05)
    watch.watch("good", 0.2)
    assert reported.wait(10) and calls == ["bad", "good"]


def test_a_limit_longer_than_a_thread_can_wait_does_not_stop_the_watch() -> None:
    """A coordinator may send any finite limit; waiting for one of 1e12 s is beyond
    what a thread can do, and must not end the watch of every other job."""
    reported = threading.Event()
    calls: list[str] = []

    def on_idle(job: str, limit: float) -> None:
        calls.append(job)
        reported.set()

    watch = IdleWatch(on_idle)
    watch.watch("for-ever", 1e12)
    # Let the thread start waiting for that deadline before a nearer one arrives.
    wait_for(lambda: watch._thread is not None, "the watch never started")
    time.sleep(0.05)
    watch.watch("soon", 0.05)
    assert reported.wait(10), "the watch stopped: the nearer job was never reported"
    assert calls == ["soon"] and watch.watched == ["for-ever"]
    watch.forget("for-ever")


def test_a_job_without_an_idle_limit_sends_no_keep_job() -> None:
    """Interval 0 would otherwise send KeepJob in a tight loop for the whole job."""
    asked: list[str] = []

    def channel_for(department: str) -> grpc.Channel:
        asked.append(department)
        raise AssertionError("no KeepJob should be sent")

    keeper = JobKeeper("job-1", keep_interval(0.0), channel_for)
    keeper.add("traffic")
    keeper.start()
    time.sleep(0.1)
    keeper.stop()
    assert asked == []


@pytest.mark.parametrize(
    ("limit", "interval"), [(2.0, 0.5), (300.0, MAX_KEEP_INTERVAL), (100.0, 25.0)]
)
def test_keep_interval_is_a_quarter_of_the_limit_at_most_30_s(
    limit: float, interval: float
) -> None:
    assert keep_interval(limit) == interval


# -- against a participant over gRPC ------------------------------------------------


def test_a_participant_ends_a_job_whose_coordinator_went_silent(
    cluster: Cluster, fab: bytes
) -> None:
    node = cluster.nodes["traffic"]
    started = time.monotonic()
    node.participant.start_job(COORDINATOR, job_spec(fab, idle_limit=0.4), fab)
    workdir = node.runtime.config.data_dir / "fl" / "jobs" / "job-1"
    assert workdir.exists()
    wait_for(lambda: bool(node.runtime.audit.events("fl.ended")), "the silent job never ended")
    assert time.monotonic() - started >= 0.4
    [ended] = node.runtime.audit.events("fl.ended")
    assert ended["outcome"] == "error" and ended["peer"] == COORDINATOR
    assert ended["detail"]["reason"] == (
        f"the coordinator {COORDINATOR} went silent: nothing heard of the job for 0.4 s "
        "(the job's idle limit)"
    )
    assert node.participant.job_ids == [] and not workdir.exists()
    # A coordinator that comes back finds the job gone, and cannot end it twice.
    with pytest.raises(UnknownJobError):
        node.participant.keep_job(COORDINATOR, "job-1")
    with pytest.raises(UnknownJobError):
        node.participant.end_job(COORDINATOR, "job-1", "ok")
    assert len(node.runtime.audit.events("fl.ended")) == 1


def test_a_job_without_a_limit_is_kept_until_it_ends(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab, idle_limit=0.0), fab)
    assert node.participant._idle.watched == []
    node.participant.end_job(COORDINATOR, "job-1", "ok")
    [ended] = node.runtime.audit.events("fl.ended")
    assert ended["outcome"] == "ok" and "reason" not in ended["detail"]


def test_keep_job_keeps_the_job_and_ends_when_the_coordinator_stops(
    cluster: Cluster, fab: bytes
) -> None:
    node = cluster.nodes["traffic"]
    limit = 0.6
    node.participant.start_job(COORDINATOR, job_spec(fab, idle_limit=limit), fab)
    kept: list[float] = []
    keep = node.participant.keep_job

    def counting(coordinator: str, job_id: str) -> None:
        kept.append(time.monotonic())
        keep(coordinator, job_id)

    node.participant.keep_job = counting  # type: ignore[method-assign]
    keeper = JobKeeper("job-1", keep_interval(limit), cluster.coordinator.peer_channel)
    keeper.add("traffic")
    keeper.start()
    try:
        # Kept alive across three idle limits.
        wait_for(lambda: len(kept) >= 12, "KeepJob never arrived often enough")
        assert kept[-1] - kept[0] > 2 * limit
        assert node.participant.job_ids == ["job-1"]
        assert node.runtime.audit.events("fl.ended") == []
    finally:
        keeper.stop()
    stopped = time.monotonic()
    wait_for(lambda: bool(node.runtime.audit.events("fl.ended")), "the job outlived its keeper")
    assert time.monotonic() - stopped >= limit / 2
    assert "went silent" in node.runtime.audit.events("fl.ended")[0]["detail"]["reason"]


def test_keeper_drops_a_participant_that_no_longer_has_the_job(cluster: Cluster) -> None:
    keeper = JobKeeper("gone", 0.05, cluster.coordinator.peer_channel)
    keeper.add("traffic")
    keeper.add("health")
    keeper.start()
    try:
        wait_for(lambda: keeper.departments == [], "NOT_FOUND did not stop the KeepJob calls")
    finally:
        keeper.stop()


def test_keep_job_for_an_unknown_or_foreign_job_is_not_found(cluster: Cluster, fab: bytes) -> None:
    stub = pb_grpc.FederatedStub(cluster.coordinator.peer_channel("traffic"))
    with pytest.raises(grpc.RpcError) as info:
        stub.KeepJob(wire.job_alive_to_proto("nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab, idle_limit=30.0), fab)
    with pytest.raises(UnknownJobError):
        node.participant.keep_job("security", "job-1")
