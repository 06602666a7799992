"""Idle limits: end a job whose coordinator has gone silent.

A coordinator that is killed outright never sends EndJob, so a participant
would keep the job (its Context and private data copy) until it restarts. The
coordinator therefore sends ``KeepJob`` at :func:`keep_interval` while the job
runs, and a participant ends a job it has heard nothing of for the job's idle
limit.

Invariants:

* Each watched job has one deadline: the last time it was heard of plus its
  limit. :meth:`IdleWatch.heard` moves it; nothing else does.
* A job is reported idle at most once, and only if it is still watched when
  its deadline passes (:meth:`IdleWatch.forget` before that wins).
* The callback runs on the watch's own thread, never under its lock; the
  thread exits when no job is watched and starts again with the next one.
* A limit is the coordinator's choice, any finite number: the thread never
  waits longer than :data:`MAX_WAIT` at a time (a thread cannot wait for 1e12
  seconds), so no limit can stop the watch of the other jobs.
* A job with no idle limit (0) gets no KeepJob: there is nothing to keep alive.
* :class:`JobKeeper` never blocks on a participant: each KeepJob is an
  asynchronous call with the interval as its deadline, so one unreachable
  participant delays no other's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from node.errors import NodeError
from node.fl import wire
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc

__all__ = ["MAX_KEEP_INTERVAL", "MAX_WAIT", "IdleWatch", "JobKeeper", "keep_interval"]

_log = logging.getLogger(__name__)

#: The coordinator says a job is alive at least this often (seconds), whatever its limit.
MAX_KEEP_INTERVAL = 30.0
#: Longest single wait of the watch thread (seconds); it then looks again.
MAX_WAIT = 3600.0


def keep_interval(idle_limit: float) -> float:
    """Seconds between two KeepJob calls for a job with this idle limit: a quarter
    of it (so three can be lost or late before a participant gives up), at most
    :data:`MAX_KEEP_INTERVAL`."""
    return min(idle_limit / 4, MAX_KEEP_INTERVAL)


class IdleWatch:
    """Calls ``on_idle(job_id, limit)`` for a job not heard of for its limit."""

    def __init__(
        self,
        on_idle: Callable[[str, float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``background=False`` runs no thread: the owner calls :meth:`tick` itself
        (tests drive a fake ``clock`` that way)."""
        self._on_idle = on_idle
        self._clock = clock
        self._background = background
        # job id -> (limit, deadline)
        self._jobs: dict[str, tuple[float, float]] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, job_id: str, limit: float) -> None:
        """Start (or restart) the job's idle clock; a limit of 0 means no limit."""
        if limit <= 0:
            return
        with self._changed:
            self._jobs[job_id] = (limit, self._clock() + limit)
            if self._background and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fl-idle", daemon=True)
                self._thread.start()
            self._changed.notify()

    def heard(self, job_id: str) -> None:
        """The coordinator spoke of the job: its idle clock starts again."""
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is not None:
                self._jobs[job_id] = (entry[0], self._clock() + entry[0])

    def forget(self, job_id: str) -> None:
        """Stop watching the job (it ended)."""
        with self._changed:
            self._jobs.pop(job_id, None)
            self._changed.notify()

    @property
    def watched(self) -> list[str]:
        with self._changed:
            return sorted(self._jobs)

    def tick(self) -> list[str]:
        """End every job past its deadline now (``on_idle`` for each); returns their ids."""
        with self._changed:
            due = self._take_due(self._clock())
        self._fire(due)
        return [job_id for job_id, _ in due]

    def _take_due(self, now: float) -> list[tuple[str, float]]:
        due = [(job, limit) for job, (limit, deadline) in self._jobs.items() if deadline <= now]
        for job, _ in due:
            del self._jobs[job]
        return due

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._thread = None
                    return
                now = self._clock()
                due = self._take_due(now)
                if not due:
                    # A heard() only moves a deadline later, so waking at the earliest
                    # one (or at a watch/forget) never misses a job.
                    wait = min(deadline for _, deadline in self._jobs.values()) - now
                    self._changed.wait(min(max(wait, 0.0), MAX_WAIT))
                    continue
            self._fire(due)

    def _fire(self, due: list[tuple[str, float]]) -> None:
        for job_id, limit in due:
            try:
                self._on_idle(job_id, limit)
            except Exception:  # noqa: BLE001 -- the watch must outlive one failed end
                _log.exception("ending idle job %s failed", job_id)


class JobKeeper:
    """The coordinator's side: sends KeepJob for one job to the participants that
    joined it, every ``interval`` seconds, from :meth:`start` until :meth:`stop`."""

    def __init__(
        self, job_id: str, interval: float, channel_for: Callable[[str], grpc.Channel]
    ) -> None:
        self._job_id = job_id
        self._interval = interval
        self._channel_for = channel_for
        self._departments: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fl-keep-{job_id}", daemon=True)

    def add(self, department: str) -> None:
        """Keep the job alive at ``department`` too (it has joined)."""
        with self._lock:
            self._departments.add(department)

    @property
    def departments(self) -> list[str]:
        with self._lock:
            return sorted(self._departments)

    def start(self) -> None:
        """Start sending; a job without an idle limit (interval 0) sends nothing."""
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        """Send no more KeepJob; returns once the sending thread has finished."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            for department in self.departments:
                self._keep(department)

    def _keep(self, department: str) -> None:
        try:
            stub = pb_grpc.FederatedStub(self._channel_for(department))
            call = stub.KeepJob.future(
                wire.job_alive_to_proto(self._job_id), timeout=self._interval
            )
        except NodeError as e:
            _log.warning("KeepJob for %s at %s failed: %s", self._job_id, department, e)
            return
        call.add_done_callback(lambda done: self._answered(department, done))

    def _answered(self, department: str, call: grpc.Future) -> None:
        error = call.exception()
        if error is None:
            return
        code = error.code() if isinstance(error, grpc.Call) else None
        if code == grpc.StatusCode.NOT_FOUND and not self._stopped.is_set():
            # The participant no longer has the job (it ended it, or restarted):
            # further calls cannot revive it.
            with self._lock:
                self._departments.discard(department)
            _log.warning("job %s is no longer running at %s", self._job_id, department)
        else:
            _log.debug("KeepJob for %s at %s failed: %s", self._job_id, department, code)
