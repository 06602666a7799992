"""NodeGrid: Flower's ``Grid`` over the fednode ``Federated`` service.

A ServerApp drives a federated job through this Grid exactly as it would
through Flower's own engine. Invariants:

* Every pushed message goes to its destination department at once, on a
  thread pool, with a deadline of ``min(message_timeout, remaining TTL)``;
  :class:`GrpcSender` cancels a call still open :data:`DEADLINE_GRACE_S`
  after its deadline, so no delivery outlives it for long whatever the
  transport does.
* Every pushed message gets exactly one reply. A node that fails, times out or
  answers with a reply that does not belong to the message yields an *error
  reply* shaped like the one Flower's SuperLink produces
  (``NODE_UNAVAILABLE`` / ``REPLY_MESSAGE_UNAVAILABLE``, source and
  destination the SuperLink node id), so strategies drop it as usual.
* Once the job ends the Grid is closed: deliveries in flight are cancelled and
  any further use raises Flower's ``RunNotRunningException``, which Flower's
  own helper threads (the legacy client manager) take as their signal to stop.
* A node that failed once is unavailable for the rest of the run and no longer
  listed by ``get_node_ids`` (a participant keeps its run state only in
  memory). If the strategy then keeps polling for more nodes than remain, the
  Grid raises :class:`NodesUnavailableError` after ``node_wait_timeout``
  rather than letting the job hang.

The transport is a :class:`Sender`; the real one (:class:`GrpcSender`) speaks
gRPC over the node's mTLS channels, and unit tests pass a fake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

import grpc
from flwr.app import Error, Message, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.date import now
from flwr.supercore.run import Run, RunNotRunningException

from node.fl import wire
from node.fl.errors import JobFailedError, NodesUnavailableError
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc

__all__ = ["DEADLINE_GRACE_S", "GridEvent", "GrpcSender", "NodeGrid", "Sender"]

_log = logging.getLogger(__name__)

#: Seconds a Deliver call may stay open past its deadline before this side
#: cancels it. gRPC enforces the deadline itself; this bounds the wait if a call
#: misses it (seen with a loopback server stopped as the call began).
DEADLINE_GRACE_S = 5.0


class Sender(Protocol):
    """Delivers one Flower Message to a department and returns its reply.

    Implementations raise on any failure (unreachable, refused, deadline); the
    Grid turns the exception into an error reply.
    """

    def __call__(self, department: str, message: Message, timeout: float) -> Message: ...


@dataclass(frozen=True)
class GridEvent:
    """One reply (or error reply) the Grid handed to the ServerApp."""

    #: Id of the instruction message this reply answers.
    message_id: str
    node_id: int
    department: str
    group_id: str
    message_type: str
    seconds: float
    reply: Message
    #: Short reason when the reply is an error, else None.
    error: str | None


class GrpcSender:
    """The real transport: ``Federated.Deliver`` over a department's mTLS channel.

    :meth:`close` cancels the calls still in flight, so a job that ends early
    (failed or cancelled) does not leave participants' calls open until their
    deadline; later calls fail at once.
    """

    def __init__(self, channel_for: Callable[[str], grpc.Channel], job_id: str) -> None:
        self._channel_for = channel_for
        self._job_id = job_id
        self._lock = threading.Lock()
        self._calls: set[grpc.Future] = set()
        self._closed = False

    def __call__(self, department: str, message: Message, timeout: float) -> Message:
        stub = pb_grpc.FederatedStub(self._channel_for(department))
        replies = stub.Deliver(wire.message_chunks(message, self._job_id), timeout=timeout)
        with self._lock:
            closed = self._closed
            if not closed:
                self._calls.add(replies)
        if closed:
            replies.cancel()
        watchdog = threading.Timer(timeout + DEADLINE_GRACE_S, replies.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            _, reply = wire.message_from_chunks(replies)
        finally:
            watchdog.cancel()
            with self._lock:
                self._calls.discard(replies)
        return reply

    def close(self) -> None:
        """Cancel every call in flight, and any made from now on."""
        with self._lock:
            self._closed = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()


def _error_reply(ins: Message, code: int, reason: str) -> Message:
    """An error reply as Flower's SuperLink makes it for an unavailable node or reply."""
    current = now().timestamp()
    meta = ins.metadata
    metadata = Metadata(
        run_id=meta.run_id,
        message_id="",
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=meta.message_id,
        group_id=meta.group_id,
        message_type=meta.message_type,
        created_at=current,
        ttl=max(meta.ttl - (current - meta.created_at), 0.0),
        src_task_id=meta.dst_task_id,
        dst_task_id=meta.src_task_id,
    )
    reply = make_message(metadata=metadata, error=Error(code=code, reason=reason))
    reply.metadata.__dict__["_message_id"] = reply.object_id
    return reply


#: gRPC codes of a participant that was never reached, as opposed to one that refused.
_UNREACHED = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def _not_started(why: str) -> str:
    """Why a participant is not in the job, said as a refusal only when it refused."""
    if why.startswith(_UNREACHED) or why.startswith("cannot reach"):
        return f"could not be reached: {why}"
    return f"refused the job: {why}"


class NodeGrid(Grid):
    """A Flower Grid whose nodes are fednode departments."""

    def __init__(
        self,
        participants: Mapping[int, str],
        send: Sender,
        *,
        message_timeout: float = 120.0,
        node_wait_timeout: float = 10.0,
        on_reply: Callable[[GridEvent], None] | None = None,
        on_send: Callable[[Message], None] | None = None,
        max_workers: int | None = None,
        refused: Mapping[int, tuple[str, str]] | None = None,
    ) -> None:
        """``participants`` maps node ids to the departments that joined; ``refused``
        maps the others' node ids to ``(department, why)``. Those count as lost from
        the start, so a strategy that waits for them fails after ``node_wait_timeout``
        instead of waiting for ever."""
        if not participants:
            raise ValueError("NodeGrid needs at least one participant")
        self._departments = dict(participants)
        self._send = send
        self._message_timeout = message_timeout
        self._node_wait_timeout = node_wait_timeout
        self._on_reply = on_reply
        self._on_send = on_send
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers or max(4, 2 * len(participants)),
            thread_name_prefix="nodegrid",
        )
        self._lock = threading.Lock()
        self._pending: dict[str, Future[Message]] = {}
        self._unavailable: dict[int, str] = {}
        for node_id, (department, why) in (refused or {}).items():
            self._departments[node_id] = department
            self._unavailable[node_id] = _not_started(why)
        self._short_since: float | None = None
        self._run: Run | None = None
        self._failed = threading.Event()
        self._closed = False
        #: Set when the Grid gave up on the run (the ServerApp may be blocked elsewhere).
        self.failure: JobFailedError | None = None

    # -- Grid API ---------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        """Set the run this Grid serves."""
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = run

    @property
    def run(self) -> Run:
        """The run this Grid serves (a copy)."""
        if self._run is None:
            raise RuntimeError("NodeGrid.set_run() was not called")
        return Run(**vars(self._run))

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message for a node (Flower deprecates this in favour of ``Message``)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Ids of the participants still available in this run.

        Raises:
            NodesUnavailableError: the ServerApp has polled for nodes for longer
                than ``node_wait_timeout`` without sending anything. A job's
                participants are fixed when it starts and none joins later, so it
                waits for nodes that will not come: some failed or refused, or
                its minimum node count exceeds the participants.
        """
        self._check_open()
        with self._lock:
            live = [n for n in self._departments if n not in self._unavailable]
            in_flight = any(not f.done() for f in self._pending.values())
            if in_flight:
                # A ServerApp with messages out is working, not waiting for nodes.
                self._short_since = None
            elif self._short_since is None:
                self._short_since = time.monotonic()
            elif time.monotonic() - self._short_since > self._node_wait_timeout:
                error = self._waiting_error(live)
                if self.failure is None:
                    self.failure = error
                self._failed.set()
                raise error
            return live

    def _waiting_error(self, live: list[int]) -> NodesUnavailableError:
        """Why a ServerApp that keeps polling for nodes will never have them."""
        total = len(self._departments)
        if not self._unavailable:
            return NodesUnavailableError(
                f"all {total} participants are connected, but the strategy keeps waiting "
                "for more: its minimum node count is above the job's participants",
                hint=f"set the minimum node counts in the job's [strategy] to {total} or "
                "fewer (for the seed app, min-nodes), or add participants",
            )
        lost = ", ".join(f"{self._departments[n]} ({why})" for n, why in self._unavailable.items())
        refused = any(why.startswith("refused the job") for why in self._unavailable.values())
        hint = (
            "a participant refused the job: its operator approves the app ('fednode app "
            "approve FAB') or holds an agreement that allows 'federated'; or lower the "
            "strategy's minimum node counts in the job's [strategy]"
            if refused
            else "lower the strategy's minimum node counts in the job's [strategy], or "
            "launch the job again once the participants are back"
        )
        return NodesUnavailableError(
            f"only {len(live)} of {total} participants remain and the strategy keeps "
            f"waiting for more; lost: {lost}",
            hint=hint,
        )

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Send each message to its destination at once; return their ids."""
        self._check_open()
        ids: list[str] = []
        for message in messages:
            meta = message.metadata
            if self._run is not None and meta.run_id != self._run.run_id:
                raise ValueError(f"message for run {meta.run_id}, grid serves {self.run.run_id}")
            if meta.ttl <= 0 or meta.reply_to_message_id:
                raise ValueError(f"invalid instruction message: {message!r}")
            meta.__dict__["_message_id"] = message.object_id
            if self._on_send is not None:
                self._on_send(message)
            future = self._pool.submit(self._deliver, message)
            with self._lock:
                self._short_since = None
                self._pending[meta.message_id] = future
            ids.append(meta.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies that have arrived for the given ids (each is returned once)."""
        ready: list[Message] = []
        with self._lock:
            for mid in message_ids:
                future = self._pending.get(mid)
                if future is not None and future.done():
                    del self._pending[mid]
                    ready.append(future.result())
        return ready

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push messages and wait for their replies (at most ``timeout`` seconds)."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            with self._lock:
                futures = [self._pending[m] for m in waiting if m in self._pending]
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait(futures, timeout=remaining, return_when=FIRST_COMPLETED)
            got = list(self.pull_messages(list(waiting)))
            replies.extend(got)
            waiting.difference_update(r.metadata.reply_to_message_id for r in got)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return replies

    # -- internals --------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker threads, and cancel deliveries in flight if the transport
        can (as :class:`GrpcSender` does); a ServerApp still running then gets
        error replies at once and fails at its next push."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Sender is a plain callable; closing is an optional extra of a transport.
        close = getattr(self._send, "close", None)
        if callable(close):
            close()

    def _check_open(self) -> None:
        if self._closed:
            # What Flower's own Grid raises once a run is over; its helpers stop quietly.
            raise RunNotRunningException(f"run {self._run.run_id if self._run else '?'} has ended")

    def fail(self, error: JobFailedError) -> None:
        """Give up on the run with ``error`` (the first reason given is kept); the
        coordinator, waiting on :meth:`wait_failed`, ends the job with it."""
        with self._lock:
            if self.failure is None:
                self.failure = error
        self._failed.set()

    def wait_failed(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True once the Grid has given up on the run."""
        return self._failed.wait(timeout)

    @property
    def unavailable(self) -> dict[str, str]:
        """Departments that failed in this run, with the reason."""
        with self._lock:
            return {self._departments[n]: why for n, why in self._unavailable.items()}

    def _deliver(self, message: Message) -> Message:
        meta = message.metadata
        node_id = meta.dst_node_id
        department = self._departments.get(node_id)
        started = time.monotonic()
        if department is None:
            reply = _error_reply(message, ErrorCode.NODE_UNAVAILABLE, f"unknown node {node_id}")
            return self._finish(message, "?", started, reply, f"unknown node {node_id}")
        with self._lock:
            down = self._unavailable.get(node_id)
        if down is not None:
            reason = f"{department} is unavailable in this run: {down}"
            reply = _error_reply(message, ErrorCode.NODE_UNAVAILABLE, reason)
            return self._finish(message, department, started, reply, reason)
        remaining_ttl = meta.created_at + meta.ttl - now().timestamp()
        timeout = max(0.001, min(self._message_timeout, remaining_ttl))
        try:
            reply = self._send(department, message, timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED
            reason = (
                f"{department} did not reply within {timeout:.1f} s"
                if timed_out
                else f"{department} failed: {code.name if code else 'transport error'}"
            )
            return self._fail(message, department, started, reason, timed_out)
        except Exception as e:  # noqa: BLE001 -- any transport failure becomes an error reply
            return self._fail(message, department, started, f"{department} failed: {e}", False)
        rmeta = reply.metadata
        if (
            rmeta.reply_to_message_id != meta.message_id
            or rmeta.src_node_id != node_id
            or rmeta.run_id != meta.run_id
        ):
            return self._fail(
                message, department, started, f"{department} sent a reply to another message", False
            )
        rmeta.__dict__["_message_id"] = reply.object_id
        error = None
        if reply.has_error():
            error = f"{department}: {reply.error.reason}"
        return self._finish(message, department, started, reply, error)

    def _fail(
        self, message: Message, department: str, started: float, reason: str, timed_out: bool
    ) -> Message:
        with self._lock:
            self._unavailable.setdefault(message.metadata.dst_node_id, reason)
        code = ErrorCode.REPLY_MESSAGE_UNAVAILABLE if timed_out else ErrorCode.NODE_UNAVAILABLE
        return self._finish(
            message, department, started, _error_reply(message, code, reason), reason
        )

    def _finish(
        self, message: Message, department: str, started: float, reply: Message, error: str | None
    ) -> Message:
        if self._on_reply is not None:
            meta = message.metadata
            event = GridEvent(
                message_id=meta.message_id,
                node_id=meta.dst_node_id,
                department=department,
                group_id=meta.group_id,
                message_type=meta.message_type,
                seconds=time.monotonic() - started,
                reply=reply,
                error=error,
            )
            try:
                self._on_reply(event)
            except Exception:  # noqa: BLE001 -- an observer must never break the run
                _log.exception("NodeGrid observer failed")
        return reply
