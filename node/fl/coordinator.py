"""The coordinator: runs a job's ServerApp against a NodeGrid.

Steps of :func:`run_job`:

1. Build (or read) the FAB and fuse the run config.
2. Open the job at every participant at once (``Federated.StartJob``). A
   participant that refuses or cannot be reached is left out and reported;
   the strategy's minimums decide whether the job can still run.
3. Run the ServerApp in this process against a :class:`NodeGrid` whose
   observers feed live progress events and the results log.
4. Close the job at every participant (saying why, if it ended early), write
   the results directory, and record ``fl.job`` in the ledger (start and end,
   with the DP settings).

From the first participant's start to the end, a :class:`JobKeeper` tells
each participant that joined that the job goes on, so a participant ends a
job whose coordinator died within the job's idle limit.

An app that declares the run-config key ``secure-aggregation`` gets it set
to the job's ``secagg`` flag, so its ServerApp runs SecAgg+ exactly when the
participants run ``secaggplus_mod``.

Flower keeps the running task's identity in process-wide state
(``TaskIdentity``), so one process runs one ServerApp at a time; a second
launch waits for the first.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from node.admin.cancel import check_cancelled
from node.errors import NodeError
from node.fl import wire
from node.fl.bundle import AppBundle, fused_run_config, install_bundle, load_server_app
from node.fl.errors import JobFailedError
from node.fl.grid import GridEvent, GrpcSender, NodeGrid, Sender
from node.fl.idle import JobKeeper, keep_interval
from node.fl.jobfile import JobFile, ParticipantSpec
from node.fl.preflight import check_run_config, job_bundle
from node.fl.results import RoundLog, claim_output, write_json, write_results
from node.fl.runtime import FlRuntime
from node.fl.secagg_watch import SecAggWatch
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc

__all__ = ["SECAGG_KEY", "Emit", "JobStatusStore", "new_job_id", "run_job"]

_log = logging.getLogger(__name__)
#: Run-config key an app may declare to learn whether the job runs SecAgg+.
SECAGG_KEY = "secure-aggregation"
_RUN_LOCK = threading.Lock()

Emit = Callable[[dict[str, Any]], None]
#: Builds the transport for a job (tests pass fakes; the default is gRPC).
SenderFactory = Callable[[str], Sender]


def new_job_id(name: str) -> str:
    """A job id: the job name, a UTC timestamp and 6 random hex digits."""
    clean = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:32] or "job"
    return f"{clean}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def _random_id(taken: set[int]) -> int:
    # Ledger JSON carries integers only up to 2**53, so ids stay below it.
    while True:
        value = secrets.randbits(52)
        if value > SUPERLINK_NODE_ID and value not in taken:
            taken.add(value)
            return value


#: Seconds a job's start waits for a participant's channel to connect before calling it.
CONNECT_WAIT_S = 5.0

#: Job states that only a running coordinator process can be in.
_LIVE_STATES = ("starting", "running")


class JobStatusStore:
    """Status files of the jobs this node coordinated: ``<data>/fl/coordinated/<id>.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "fl" / "coordinated"

    def write(self, status: dict[str, Any]) -> None:
        write_json(self.root / f"{status['job_id']}.json", status)

    def read_all(self, serving_pid: int | None) -> list[dict[str, Any]]:
        """Every status. ``serving_pid`` is the process of the node now serving this
        home (``None`` if none runs): a job left ``starting`` or ``running`` by
        another process (the node stopped or crashed during it) reads as
        ``interrupted``, and is stored so only when the node itself reads it."""
        out = []
        for path in sorted(self.root.glob("*.json")):
            try:
                status = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                _log.warning("unreadable job status file %s", path)
                continue
            if status.get("state") in _LIVE_STATES and status.get("node_pid") != serving_pid:
                status.update(
                    state="interrupted",
                    error="the node stopped during the job; launch it again",
                )
                if serving_pid == os.getpid():
                    self.write(status)
            out.append(status)
        return sorted(out, key=lambda s: s.get("started_at", 0))


@dataclass
class _Started:
    spec: ParticipantSpec
    node_id: int
    ok: bool
    rows: int = 0
    columns: tuple[str, ...] = ()
    error: str | None = None


def _start_participant(
    runtime: FlRuntime,
    job: JobFile,
    job_id: str,
    run_id: int,
    node_id: int,
    part: ParticipantSpec,
    bundle: AppBundle,
    run_config: dict[str, Any],
    keeper: JobKeeper,
) -> _Started:
    spec = wire.JobSpec(
        job_id=job_id,
        run_id=run_id,
        node_id=node_id,
        fab_sha256=bundle.sha256,
        fab_size=len(bundle.data),
        agreement=part.agreement,
        dataset=part.dataset,
        run_config=run_config,
        secagg=job.secagg,
        dp=job.dp,
        idle_limit=job.idle_limit,
    )
    try:
        channel = runtime.peer_channel(part.department)
        # A participant that restarted lately can leave this node's channel in reconnect
        # back-off, where calls fail at once; let it connect first, for a bounded time.
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=min(CONNECT_WAIT_S, job.start_timeout))
        except grpc.FutureTimeoutError:
            ready.cancel()  # StartJob then fails fast and says why
        stub = pb_grpc.FederatedStub(channel)
        reply = stub.StartJob(wire.job_start_parts(spec, bundle.data), timeout=job.start_timeout)
        info = wire.job_started_from_proto(reply)
    except grpc.RpcError as e:
        detail = e.details() if isinstance(e, grpc.Call) else str(e)
        code = e.code().name if isinstance(e, grpc.Call) else "UNAVAILABLE"
        return _Started(part, node_id, False, error=f"{code}: {detail}")
    except NodeError as e:
        return _Started(part, node_id, False, error=str(e))
    keeper.add(part.department)
    return _Started(part, node_id, True, rows=info.rows, columns=info.columns)


#: Seconds a participant has to acknowledge the end of a job.
END_TIMEOUT_S = 5.0


def _end_participant(
    runtime: FlRuntime, job_id: str, department: str, outcome: str, reason: str, joined: bool
) -> None:
    try:
        stub = pb_grpc.FederatedStub(runtime.peer_channel(department))
        stub.EndJob(wire.job_end_to_proto(job_id, outcome, reason), timeout=END_TIMEOUT_S)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        if joined or code != grpc.StatusCode.NOT_FOUND:
            _log.warning("EndJob at %s failed: %s", department, code or e)
    except NodeError as e:
        _log.warning("EndJob at %s failed: %s", department, e)


def _end_participants(
    runtime: FlRuntime, job_id: str, departments: dict[str, bool], outcome: str, reason: str
) -> None:
    """Tell every participant the job ended (and why, if it failed), all at once,
    each within END_TIMEOUT_S.

    ``departments`` maps each participant to whether it joined. Those that did
    not are told too: a start that timed out here may still have opened the
    job there, and a participant that never had it just answers NOT_FOUND.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(departments))) as pool:
        for department, joined in departments.items():
            pool.submit(_end_participant, runtime, job_id, department, outcome, reason, joined)


def run_job(
    runtime: FlRuntime,
    job: JobFile,
    emit: Emit,
    *,
    sender_factory: SenderFactory | None = None,
    job_id: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a federated job to the end; returns the job summary.

    Raises:
        OutputError: the output folder holds an earlier job's results (and
            ``overwrite`` is false), another job is writing to it, or it
            cannot be created; nothing has started.
        JobFileError: the app path does not exist, or the job's run-config
            overrides do not fit the app.
        AppBundleError: the app does not build or load.
        JobFailedError: no participant joined, or the ServerApp stopped with an error
            (e.g. strategy minimums unmet); the results directory is written anyway.
    """
    claim = claim_output(job.output, overwrite=overwrite)
    try:
        return _run_claimed(runtime, job, emit, sender_factory, job_id)
    finally:
        claim.release()


def _run_claimed(
    runtime: FlRuntime,
    job: JobFile,
    emit: Emit,
    sender_factory: SenderFactory | None,
    job_id: str | None,
) -> dict[str, Any]:
    bundle = job_bundle(job)
    check_run_config(job, bundle)
    overrides = dict(job.overrides)
    if SECAGG_KEY in bundle.default_config:
        # The ServerApp must run SecAgg+ exactly when the participants run secaggplus_mod.
        overrides[SECAGG_KEY] = job.secagg
    run_config = fused_run_config(bundle, overrides)
    job_id = job_id or new_job_id(job.name)
    taken: set[int] = set()
    run_id = _random_id(taken)
    node_ids = {p.department: _random_id(taken) for p in job.participants}
    dp = job.dp.to_record() if job.dp else None
    status_store = JobStatusStore(runtime.config.data_dir)
    started_at = int(time.time())
    status: dict[str, Any] = {
        "job_id": job_id,
        "name": job.name,
        "app": bundle.fab_id,
        "app_version": bundle.version,
        "fab_sha256": bundle.sha256,
        "state": "starting",
        "started_at": started_at,
        "output": str(job.output),
        "participants": [p.department for p in job.participants],
        "round": None,
        "node_pid": os.getpid(),
    }
    status_store.write(status)
    runtime.audit.record(
        "fl.job",
        digest="sha256:" + bundle.sha256,
        outcome="ok",
        detail={
            "phase": "start",
            "job_id": job_id,
            "run_id": run_id,
            "app": bundle.fab_id,
            "participants": [
                {"department": p.department, "dataset": p.dataset, "agreement": p.agreement}
                for p in job.participants
            ],
            "secagg": job.secagg,
            "dp": dp,
        },
    )
    emit(
        {
            "event": "job.started",
            "job_id": job_id,
            "app": bundle.fab_id,
            "fab_sha256": bundle.sha256,
            "rounds": run_config.get("num-server-rounds"),
            "participants": [p.department for p in job.participants],
        }
    )

    keeper = JobKeeper(job_id, keep_interval(job.idle_limit), runtime.peer_channel)
    keeper.start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(job.participants))) as pool:
            futures = [
                pool.submit(
                    _start_participant,
                    runtime,
                    job,
                    job_id,
                    run_id,
                    node_ids[p.department],
                    p,
                    bundle,
                    run_config,
                    keeper,
                )
                for p in job.participants
            ]
            started = [f.result() for f in futures]
        for s in started:
            emit(
                {
                    "event": "participant",
                    "department": s.spec.department,
                    "ok": s.ok,
                    "rows": s.rows,
                    "columns": list(s.columns),
                    "error": s.error,
                }
            )
    except BaseException:
        keeper.stop()  # the job never reaches the try that stops it below
        raise
    joined = {s.node_id: s.spec.department for s in started if s.ok}

    # The ServerApp thread reports phases; after a failure it may still run while
    # this thread writes the final status. One lock orders the writes, and nothing
    # the app does after the end can put a stale "running" status back.
    status_lock = threading.Lock()
    ended = False

    def on_phase(summary: dict[str, Any]) -> None:
        with status_lock:
            if ended:
                return
            status["round"] = summary["round"]
            status_store.write(status)
        emit({"event": "phase", **{k: v for k, v in summary.items() if k != "replies"}})

    def on_reply(entry: dict[str, Any]) -> None:
        emit({"event": "reply", **entry})

    round_log = RoundLog(on_phase=on_phase, on_reply=on_reply)
    outcome, error = "ok", None
    t0 = time.monotonic()
    try:
        if not joined:
            raise JobFailedError(
                "no participant joined the job",
                hint="check each participant's reply above (approval, agreement, reachability)",
            )
        # Ctrl-C while the participants were starting: stop before the first round.
        check_cancelled()
        status["state"] = "running"
        status_store.write(status)
        server_app = load_server_app(install_bundle(bundle, runtime.config.data_dir / "fl"))
        send = (sender_factory or (lambda jid: GrpcSender(runtime.peer_channel, jid)))(job_id)

        def observe(event: GridEvent) -> None:
            round_log.replied(event)
            secagg_watch.replied(event)

        def on_send(message: Message) -> None:
            round_log.sent(message)
            secagg_watch.sent(message)

        grid = NodeGrid(
            joined,
            send,
            refused={
                s.node_id: (s.spec.department, s.error or "unknown") for s in started if not s.ok
            },
            message_timeout=job.message_timeout,
            node_wait_timeout=job.node_wait_timeout,
            on_reply=observe,
            on_send=on_send,
        )
        # A participant lost during SecAgg+ setup makes the round's unmasking fail;
        # the watch turns that into the job's failure, naming the lost node(s).
        secagg_watch = SecAggWatch(grid.fail)
        run = Run.create_empty(run_id)
        run.fab_id, run.fab_version, run.fab_hash = bundle.fab_id, bundle.version, bundle.sha256
        run.override_config = dict(overrides)
        grid.set_run(run)
        context = Context(
            run_id=run_id,
            node_id=SUPERLINK_NODE_ID,
            node_config={},
            state=RecordDict(),
            run_config=dict(run_config),
        )
        try:
            with _RUN_LOCK:
                _run_server_app(server_app, grid, context, run_id)
        except NodeError:
            raise
        except Exception as e:  # the ServerApp is foreign code
            raise JobFailedError(
                f"the ServerApp stopped with {type(e).__name__}: {e}",
                hint="see the node log for the traceback; strategy minimums may be unmet",
            ) from e
        finally:
            grid.close()
            round_log.finish()
    except NodeError as e:
        outcome, error = "error", str(e)
        raise
    except BaseException as e:
        # Not the app's failure but this process's (a bug, an interrupt): the job
        # still ended early, and every record must say so.
        outcome, error = "error", f"the coordinator stopped with {type(e).__name__}: {e}"
        raise
    finally:
        keeper.stop()
        _end_participants(
            runtime,
            job_id,
            {s.spec.department: s.ok for s in started},
            outcome,
            error or "",
        )
        summary = {
            "job_id": job_id,
            "name": job.name,
            "app": bundle.fab_id,
            "app_version": bundle.version,
            "fab_sha256": bundle.sha256,
            "run_id": run_id,
            "outcome": outcome,
            "error": error,
            "started_at": started_at,
            "seconds": round(time.monotonic() - t0, 3),
            "run_config": run_config,
            "secagg": job.secagg,
            "dp": dp,
            "participants": [
                {
                    "department": s.spec.department,
                    "dataset": s.spec.dataset,
                    "agreement": s.spec.agreement,
                    "joined": s.ok,
                    "rows": s.rows,
                    "columns": list(s.columns),
                    "error": s.error,
                }
                for s in started
            ],
            "rounds": max(
                (r["round"] for r in round_log.rounds() if isinstance(r["round"], int)),
                default=0,
            ),
            "final_metrics": _final_metrics(round_log),
        }
        write_results(job.output, round_log, summary)
        with status_lock:
            ended = True
            status.update(state="finished" if outcome == "ok" else "failed", error=error)
            status["finished_at"] = int(time.time())
            status_store.write(status)
        runtime.audit.record(
            "fl.job",
            digest="sha256:" + bundle.sha256,
            outcome=outcome,
            detail={
                "phase": "end",
                "job_id": job_id,
                "run_id": run_id,
                "rounds": summary["rounds"],
                "joined": sorted(joined.values()),
                "secagg": job.secagg,
                "dp": dp,
                **({"reason": error[:200]} if error else {}),
            },
        )
        emit({"event": "job.finished", "job_id": job_id, "outcome": outcome, "error": error})
    return summary


def _run_server_app(server_app: ServerApp, grid: NodeGrid, context: Context, run_id: int) -> None:
    """Run the ServerApp; return when it does, or raise once the Grid gives up.

    Flower's legacy client manager can block for a day waiting for nodes that
    will never come back, so the app runs in a daemon thread and the Grid's
    failure ends the job even while the app is still blocked.
    """
    outcome: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        try:
            server_app(grid=grid, context=context)
        except BaseException as e:  # noqa: BLE001 -- handed to the waiting thread
            outcome.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="serverapp", daemon=True)
    thread.start()
    while not done.wait(0.2):
        if grid.wait_failed(0) and grid.failure is not None:
            raise grid.failure
        # Ctrl-C in 'fl launch': the job ends as failed; closing the Grid then
        # stops the ServerApp at its next message.
        check_cancelled()
    if outcome:
        raise outcome[0]
    # The app may finish between two checks (Flower halts a broken SecAgg+ round
    # and goes on); a Grid that gave up still fails the job.
    if grid.failure is not None:
        raise grid.failure


def _final_metrics(log: RoundLog) -> dict[str, dict[str, float]]:
    """The weighted metrics of the last phase of each message type."""
    final: dict[str, dict[str, float]] = {}
    for phase in log.rounds():
        if phase["ok"]:
            final[str(phase["type"])] = phase["metrics"]
    return final
