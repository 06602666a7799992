"""The participant side of a federated job.

A participant runs the ClientApp of an approved FAB on its own data, behind
the mods of :mod:`node.fl.mods`. Invariants:

* A job starts only if the FAB's SHA-256 is on the operator's approved list
  and the catalog loader grants the agreement in ``federated`` mode; either
  refusal is recorded as ``access.denied``.
* A job starts only if it meets the node's ``[fl]`` settings (secure
  aggregation, DP, largest effective epsilon), names the agreement's own
  dataset, and its run config holds only keys the FAB declares, each with the
  declared type and, for a number, within ``[fl] max_run_config_factor`` times
  the FAB's default (:mod:`node.fl.policy`); each refusal is recorded as
  ``access.denied``.
* Every message is checked again (approval and agreement) before the app runs
  and after it returns, and so is every KeepJob; while any job runs, each is
  also checked every ``recheck_interval`` seconds (:data:`RECHECK_INTERVAL`),
  so a revocation ends even a job whose coordinator has gone quiet (and one
  with no idle limit). A check that finds either revoked or expired ends the
  job at once (``access.denied``, then ``fl.ended``, its data copy deleted),
  and a reply computed meanwhile is dropped, not sent, and not recorded as
  ``fl.reply`` (see :mod:`node.fl.mods`).
* Only the coordinator that started a job (identified by its certificate) can
  send it messages or end it, and one coordinator runs at most
  :data:`MAX_JOBS_PER_COORDINATOR` jobs here at once (each holds a data copy).
* One Flower ``Context`` per job lives for the whole run, as in Flower's
  SuperNode; SecAgg+ keeps its key material in ``context.state`` between
  stages. Messages of one job run one at a time, in arrival order.
* The ClientApp runs inside the node process (no process per message, as
  Flower's SuperNode does); that is sound because only FABs the operator
  reviewed and approved ever run, which is Flower's trusted-entities model.
* Run state lives only in memory: a restarted node has no jobs, and any data
  copies left by a crash are deleted at start-up.
* A job ends when its coordinator says so (``EndJob``, also sent when the
  job fails or its launcher is cancelled), or when the coordinator has gone
  silent: nothing heard of the job (StartJob, Deliver, KeepJob) for the idle
  limit its spec carries. Either end is recorded once as ``fl.ended``, with
  the reason when it ended early. From then on no message of the job runs,
  and a reply still being computed when it ended is dropped, not sent.
* The app sees its data only as a private Parquet copy of the *treated* table
  (the agreement's column treatments applied), named by the node config key
  ``data-path``; the copy is deleted when the job ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq
from flwr.app import Context, Error, Message, RecordDict
from flwr.client.mod import make_ffn
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from node.config import FlSettings
from node.errors import AccessDenied, FederatedError, NodeError
from node.fl import policy as job_policy
from node.fl import wire
from node.fl.approvals import ApprovalStore
from node.fl.bundle import install_bundle, load_client_app, read_bundle
from node.fl.errors import AppNotApprovedError, JobLimitError, UnknownJobError
from node.fl.idle import IdleWatch
from node.fl.mods import JobChecks, TaskInfo, mods_for
from node.fl.runtime import FlRuntime

__all__ = [
    "DATA_PATH_KEY",
    "MAX_JOBS_PER_COORDINATOR",
    "MODE",
    "RECHECK_INTERVAL",
    "CatalogPolicy",
    "DataPolicy",
    "NamesDataset",
    "Participant",
]

_log = logging.getLogger(__name__)

#: Node config key naming the Parquet file the ClientApp reads.
DATA_PATH_KEY = "data-path"
#: The agreement mode federated training needs.
MODE = "federated"
#: Jobs one coordinator may run at this node at once. Each holds a copy of the
#: treated table on disk; a coordinator runs one job at a time, and the rest leaves
#: room for jobs whose end has not reached this node yet.
MAX_JOBS_PER_COORDINATOR = 4
#: Seconds between two checks of a running job's approval and agreement made
#: without any word from its coordinator: the longest a revoked job keeps its data copy.
RECHECK_INTERVAL = 1.0


class DataPolicy(Protocol):
    """Decides whether a coordinator may train on a dataset, and hands out the treated table."""

    def admit(self, coordinator: str, agreement_id: str) -> pa.Table:
        """The treated table if the agreement grants ``federated`` to ``coordinator``.

        Implementations record their own denials (``access.denied``) and raise
        AccessDenied (or another NodeError) on refusal.
        """
        ...

    def recheck(self, agreement_id: str) -> None:
        """Raise AccessDenied if the agreement was revoked or expired since admission."""
        ...


@runtime_checkable
class NamesDataset(Protocol):
    """A policy that can name the dataset an agreement covers."""

    def dataset(self, agreement_id: str) -> str:
        """The agreement's dataset.

        Raises:
            AgreementError: no such agreement.
        """
        ...


class CatalogPolicy:
    """The node's real policy: the agreements store and the catalog loader."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def admit(self, coordinator: str, agreement_id: str) -> pa.Table:
        # Imported on use: the catalog and agreements subsystems are optional in unit tests.
        from node.agreements.policy import authorize  # noqa: PLC0415
        from node.catalog.loader import load_treated_table  # noqa: PLC0415

        authorize(self._runtime, agreement_id, mode=MODE, role="provider", peer=coordinator)
        table: pa.Table = load_treated_table(self._runtime, agreement_id, MODE)
        return table

    def recheck(self, agreement_id: str) -> None:
        from node.agreements.policy import recheck  # noqa: PLC0415

        recheck(self._runtime, agreement_id)

    def dataset(self, agreement_id: str) -> str:
        from node.agreements.policy import agreements_of  # noqa: PLC0415

        name: str = agreements_of(self._runtime).get(agreement_id).signed.dataset
        return name


@dataclass
class _Job:
    spec: wire.JobSpec
    coordinator: str
    workdir: Path
    info: TaskInfo
    context: Context
    handler: ClientAppCallable
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set by end_job; a message that sees it neither runs nor replies.
    ended: threading.Event = field(default_factory=threading.Event)


class Participant:
    """Runs the jobs that coordinators start at this node."""

    def __init__(
        self,
        runtime: FlRuntime,
        *,
        policy: DataPolicy | None = None,
        approvals: ApprovalStore | None = None,
        settings: FlSettings | None = None,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._runtime = runtime
        if settings is None:
            # A NodeConfig carries node.toml's [fl]; a config without one requires nothing.
            configured = getattr(runtime.config, "fl", None)
            settings = configured if isinstance(configured, FlSettings) else FlSettings()
        self._settings = settings
        self._policy = policy or CatalogPolicy(runtime)
        self._approvals = approvals or ApprovalStore.for_data_dir(runtime.config.data_dir)
        self._root = runtime.config.data_dir / "fl"
        self._jobs: dict[str, _Job] = {}
        # Job id -> coordinator, for jobs being opened (admitted, not yet running).
        self._starting: dict[str, str] = {}
        self._lock = threading.Lock()
        self._idle = IdleWatch(self._went_silent)
        # The same timer, restarted after each check, drives the periodic recheck.
        self._recheck_interval = recheck_interval
        self._rechecks = IdleWatch(self._periodic_recheck)
        # Jobs never survive a restart, so any copy still on disk is a crash's leftover.
        shutil.rmtree(self._root / "jobs", ignore_errors=True)

    # -- job lifecycle -----------------------------------------------------------

    def start_job(self, coordinator: str, spec: wire.JobSpec, fab: bytes) -> wire.JobStartedInfo:
        """Admit a job: check approval and agreement, prepare data, load the ClientApp.

        Raises:
            AppNotApprovedError: the FAB digest is not approved here.
            AccessDenied: the job falls short of the node's ``[fl]`` settings,
                its run config does not fit the FAB, it names another dataset
                than its agreement, or the agreement does not grant
                ``federated`` to the coordinator.
            CatalogError: the dataset cannot be read.
            AppBundleError: the FAB does not install or load.
            JobLimitError: the coordinator already runs
                :data:`MAX_JOBS_PER_COORDINATOR` jobs here.
            FederatedError: a job with this id already runs.
        """
        audit = self._runtime.audit
        base = {"job_id": spec.job_id, "fab_sha256": spec.fab_sha256}

        def refuse(e: AccessDenied) -> None:
            audit.record(
                "access.denied",
                peer=coordinator,
                agreement=spec.agreement,
                dataset=spec.dataset,
                outcome="denied",
                detail={"reason": str(e), **base},
            )

        try:
            self._check_approved(spec.fab_sha256)
            job_policy.check_privacy(self._settings, spec)
            job_policy.check_run_config(
                read_bundle(fab),
                dict(spec.run_config),
                job_policy.run_config_factor(self._settings),
            )
        except AccessDenied as e:
            refuse(e)
            raise
        with self._lock:
            self._reserve(coordinator, spec.job_id)
        try:
            return self._open(coordinator, spec, fab, refuse)
        finally:
            with self._lock:
                del self._starting[spec.job_id]

    def _reserve(self, coordinator: str, job_id: str) -> None:
        """Hold ``job_id`` while its job opens (call under ``self._lock``).

        Raises:
            FederatedError: a job with this id runs or is opening.
            JobLimitError: the coordinator already holds MAX_JOBS_PER_COORDINATOR jobs here.
        """
        if job_id in self._jobs or job_id in self._starting:
            raise FederatedError(f"job {job_id} already runs at this node")
        held = sum(1 for job in self._jobs.values() if job.coordinator == coordinator)
        held += sum(1 for owner in self._starting.values() if owner == coordinator)
        if held >= MAX_JOBS_PER_COORDINATOR:
            raise JobLimitError(
                f"{coordinator} already runs {held} jobs at this node, "
                "the most one coordinator may run here at once",
                hint="end a job (or let its idle limit end it) before starting another",
            )
        self._starting[job_id] = coordinator

    def _open(
        self,
        coordinator: str,
        spec: wire.JobSpec,
        fab: bytes,
        refuse: Callable[[AccessDenied], None],
    ) -> wire.JobStartedInfo:
        """The rest of :meth:`start_job`, once the job's id is reserved."""
        audit = self._runtime.audit
        base = {"job_id": spec.job_id, "fab_sha256": spec.fab_sha256}
        table = self._policy.admit(coordinator, spec.agreement)
        if isinstance(self._policy, NamesDataset):
            try:
                job_policy.check_dataset(spec, self._policy.dataset(spec.agreement))
            except AccessDenied as e:
                refuse(e)
                raise
        workdir = self._root / "jobs" / spec.job_id
        try:
            workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            workdir.chmod(0o700)
            data_path = workdir / "data.parquet"
            # Created 0600 before any byte is written: no window where others can read it.
            fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as sink:
                pq.write_table(table, sink)
            bundle = read_bundle(fab)
            app = load_client_app(install_bundle(bundle, self._root))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        columns = tuple(table.column_names)
        info = TaskInfo(
            job_id=spec.job_id,
            run_id=spec.run_id,
            coordinator=coordinator,
            agreement=spec.agreement,
            dataset=spec.dataset,
            columns=columns,
            fab_sha256=spec.fab_sha256,
            secagg=spec.secagg,
            dp=spec.dp,
        )
        context = Context(
            run_id=spec.run_id,
            node_id=spec.node_id,
            node_config={
                DATA_PATH_KEY: str(data_path),
                "dataset": spec.dataset,
                "department": self._runtime.config.department,
            },
            state=RecordDict(),
            run_config=dict(spec.run_config),
        )

        checks = JobChecks(
            recheck=lambda: self._recheck(spec),
            # Bound late: the job exists before any message runs.
            running=lambda: _check_running(job),
            end=lambda error, when: self._revoked(spec.job_id, error, when),
        )
        handler = make_ffn(app, mods_for(info, audit, checks))
        # The treated table now sits in the job's private copy: that read is an access.
        audit.record(
            "fl.admitted",
            peer=coordinator,
            agreement=spec.agreement,
            dataset=spec.dataset,
            columns=list(columns),
            detail={
                **base,
                "run_id": spec.run_id,
                "rows": table.num_rows,
                "secagg": spec.secagg,
                "dp": spec.dp.to_record() if spec.dp else None,
            },
        )
        job = _Job(spec, coordinator, workdir, info, context, handler)
        with self._lock:
            self._jobs[spec.job_id] = job
        self._idle.watch(spec.job_id, spec.idle_limit)
        self._rechecks.watch(spec.job_id, self._recheck_interval)
        _log.info("joined job %s from %s (%d rows)", spec.job_id, coordinator, table.num_rows)
        return wire.JobStartedInfo(spec.job_id, columns, table.num_rows)

    def deliver(self, coordinator: str, job_id: str, message: Message) -> Message:
        """Run one Flower Message through the job's mods and ClientApp; return the reply.

        Raises:
            UnknownJobError: no such job here, it was started by another
                department, or it ended before or while the message ran.
            AccessDenied: the agreement or approval was found revoked or
                expired before or after the app ran; the job has ended.
        """
        job = self._job(coordinator, job_id)
        self._idle.heard(job_id)
        meta = message.metadata
        if meta.run_id != job.spec.run_id or meta.dst_node_id != job.spec.node_id:
            reason = "message is addressed to another run or node"
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=message
            )
        with job.lock:
            # Messages queue on the job's lock; one that waited past the end must not run.
            _check_running(job)
            # The mods release a reply only while the job runs and its approval and
            # agreement hold (else they raise); a gate refusal is an error reply.
            reply = job.handler(message, job.context)
        reply.metadata.__dict__["_message_id"] = reply.object_id
        return reply

    def keep_job(self, coordinator: str, job_id: str) -> None:
        """The coordinator says the job goes on: its idle clock starts again.

        Raises:
            UnknownJobError: no such job here, or it was started by another department.
            AccessDenied: the agreement or approval was revoked or has
                expired; the job has ended.
        """
        job = self._job(coordinator, job_id)
        self._recheck_or_end(job, "the job was kept alive")
        self._idle.heard(job_id)

    def end_job(self, coordinator: str, job_id: str, outcome: str, reason: str = "") -> None:
        """End a job: stop its messages, drop its Context, delete its private data
        copy, and record ``fl.ended`` (with ``reason`` if one is given). It does
        not wait for a message still running.

        Raises:
            UnknownJobError: no such job here, it was started by another
                department, or it has already ended.
        """
        self._end(self._job(coordinator, job_id), outcome, reason)

    def _went_silent(self, job_id: str, limit: float) -> None:
        """The idle watch's verdict: nothing heard of the job for ``limit`` seconds."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return  # its end raced the watch
        reason = (
            f"the coordinator {job.coordinator} went silent: nothing heard of the job "
            f"for {limit:g} s (the job's idle limit)"
        )
        try:
            self._end(job, "error", reason)
        except UnknownJobError:
            return  # EndJob got there first
        _log.warning("job %s: %s", job_id, reason)

    def _periodic_recheck(self, job_id: str, _interval: float) -> None:
        """The recheck timer's turn: end the job if its approval or agreement lapsed,
        else check it again after the interval."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return  # it ended meanwhile
        try:
            self._recheck_or_end(job, "the node's periodic check")
        except AccessDenied:
            return  # recorded and ended
        except NodeError as e:
            # Not a refusal (e.g. the approvals file is unreadable): the next message's
            # gate refuses on the same error; the check goes on.
            _log.warning("job %s: periodic check failed: %s", job_id, e)
        if not job.ended.is_set():
            self._rechecks.watch(job_id, self._recheck_interval)

    def _end(self, job: _Job, outcome: str, reason: str) -> None:
        job_id = job.spec.job_id
        with self._lock:
            if self._jobs.get(job_id) is not job:
                raise UnknownJobError(f"job {job_id!r} has already ended at this node")
            del self._jobs[job_id]
        self._idle.forget(job_id)
        self._rechecks.forget(job_id)
        job.ended.set()
        shutil.rmtree(job.workdir, ignore_errors=True)
        self._runtime.audit.record(
            "fl.ended",
            peer=job.coordinator,
            agreement=job.spec.agreement,
            dataset=job.spec.dataset,
            outcome=outcome,
            detail={
                "job_id": job_id,
                "run_id": job.spec.run_id,
                "fab_sha256": job.spec.fab_sha256,
                # A message was running when the end came: its reply is dropped.
                "interrupted": job.lock.locked(),
                **({"reason": reason} if reason else {}),
            },
        )
        _log.info("job %s ended (%s)", job_id, outcome)

    def _recheck(self, spec: wire.JobSpec) -> None:
        self._check_approved(spec.fab_sha256)
        self._policy.recheck(spec.agreement)

    def _recheck_or_end(self, job: _Job, when: str, **detail: str) -> None:
        """Recheck approval and agreement; on refusal record it, end the job and raise.

        Raises:
            AccessDenied: the approval or agreement no longer holds.
        """
        try:
            self._recheck(job.spec)
        except AccessDenied as e:
            self._runtime.audit.record(
                "access.denied",
                peer=job.coordinator,
                agreement=job.spec.agreement,
                dataset=job.spec.dataset,
                outcome="denied",
                detail={
                    "reason": str(e),
                    "job_id": job.spec.job_id,
                    "fab_sha256": job.spec.fab_sha256,
                    **detail,
                },
            )
            self._revoked(job.spec.job_id, e, when)
            raise

    def _revoked(self, job_id: str, error: AccessDenied, when: str) -> None:
        """End a job whose agreement or approval no longer holds (once; later calls do nothing)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        try:
            self._end(job, "error", f"{when}: {error}")
        except UnknownJobError:
            return  # an end got there first
        _log.warning("job %s ended: %s", job_id, error)

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs)

    # -- internals ---------------------------------------------------------------

    def _job(self, coordinator: str, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.coordinator != coordinator:
            raise UnknownJobError(f"no job {job_id!r} from {coordinator} runs at this node")
        return job

    def _check_approved(self, sha256: str) -> None:
        if not self._approvals.is_approved(sha256):
            raise AppNotApprovedError(
                f"app {sha256[:12]} is not approved at this node",
                hint=f"the operator runs 'fednode app approve {sha256}' after review",
            )


def _check_running(job: _Job) -> None:
    """Raise if the job's coordinator ended it.

    Raises:
        UnknownJobError: the job has ended.
    """
    if job.ended.is_set():
        raise UnknownJobError(f"job {job.spec.job_id!r} has ended at this node")
