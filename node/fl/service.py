"""The ``Federated`` gRPC service: the participant's network face.

The coordinator's identity comes only from its verified client certificate
(:func:`node.server.peer.caller_department`). Errors map to gRPC status codes
with short public messages; details stay in the local log. Anything that is
not a :class:`NodeError` is a fault of this node: it is logged once with its
traceback and the caller gets ``INTERNAL`` with no internal text. A call
already ended with its own status (a request chunk that does not parse is
INVALID_ARGUMENT) keeps it.

A Deliver stream is checked on its first chunk (the caller must be the
coordinator of a job running here) before the rest is read, and a peer has at
most ``MAX_DELIVERS_PER_PEER`` Deliver streams open at once (more are refused
with ``RESOURCE_EXHAUSTED``), so one peer can hold at most
``MAX_DELIVERS_PER_PEER * wire.MAX_MESSAGE_SIZE`` bytes of this node's memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from node.errors import AccessDenied, AgreementError, CatalogError, NodeError
from node.fl import wire
from node.fl.errors import AppBundleError, JobLimitError, UnknownJobError, WireError
from node.fl.participant import Participant
from protocols.fednode.v1 import federated_pb2 as pb
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc

__all__ = ["MAX_DELIVERS_PER_PEER", "PARTICIPANT_KEY", "FederatedServicer", "add_services"]

_log = logging.getLogger(__name__)

#: Key of the Participant in ``runtime.extensions``.
PARTICIPANT_KEY = "fl.participant"
#: Deliver streams one peer may have open at once. A participant runs one
#: message of a job at a time, so a coordinator needs one stream per job it
#: runs here; four leaves room for concurrent jobs and bounds memory per peer.
MAX_DELIVERS_PER_PEER = 4
#: What the caller reads when this node fails; the cause stays in the local log.
_INTERNAL = "federated job failed at the participant"

_STATUS: list[tuple[type[NodeError], grpc.StatusCode, str]] = [
    (AccessDenied, grpc.StatusCode.PERMISSION_DENIED, "denied by node policy"),
    (AgreementError, grpc.StatusCode.PERMISSION_DENIED, "agreement does not allow this job"),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT, "malformed request"),
    (UnknownJobError, grpc.StatusCode.NOT_FOUND, "no such job"),
    (JobLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many jobs"),
    (CatalogError, grpc.StatusCode.FAILED_PRECONDITION, "dataset unavailable"),
    (AppBundleError, grpc.StatusCode.FAILED_PRECONDITION, "app bundle unusable"),
]


def _already_aborted(context: grpc.ServicerContext, error: Exception) -> bool:
    """Whether ``error`` is gRPC's own abort, raised with the call's status already set.

    ``ServicerContext.abort`` raises a plain ``Exception`` after setting the
    code; the request iterator raises it too when a chunk does not parse
    (``node.server.handlers``). Aborting again would replace that status, and
    the caller's INVALID_ARGUMENT with its reason would arrive as INTERNAL.
    """
    try:
        return type(error) is Exception and context.code() is not None
    except AttributeError:  # a context without code() (gRPC before 1.38) set none
        return False


def _fail(context: grpc.ServicerContext, error: Exception, what: str) -> None:
    """End the call for an unexpected ``error``: a status already set passes through;
    anything else is this node's fault, logged and sent as INTERNAL with no text of it."""
    if _already_aborted(context, error):
        raise error
    _log.error("%s failed", what, exc_info=error)
    context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)


def _abort(context: grpc.ServicerContext, error: NodeError) -> None:
    for kind, code, public in _STATUS:
        if isinstance(error, kind):
            # Denial reasons are the caller's business (it must fix its job); others are not.
            text = (
                f"{public}: {error}"
                if kind in (AccessDenied, AgreementError, WireError, JobLimitError)
                else public
            )
            context.abort(code, text)
    context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)


class FederatedServicer(pb_grpc.FederatedServicer):  # type: ignore[misc]
    """Routes StartJob / Deliver / EndJob / KeepJob to the node's :class:`Participant`."""

    def __init__(self, participant: Participant, caller: Any = None) -> None:
        self._participant = participant
        if caller is None:
            from node.server.peer import caller_department  # noqa: PLC0415 -- server is optional in unit tests

            caller = caller_department
        self._caller = caller
        self._streams: dict[str, threading.BoundedSemaphore] = {}
        self._streams_lock = threading.Lock()

    def _stream_slot(self, peer: str) -> threading.BoundedSemaphore:
        with self._streams_lock:
            slot = self._streams.get(peer)
            if slot is None:
                slot = self._streams[peer] = threading.BoundedSemaphore(MAX_DELIVERS_PER_PEER)
            return slot

    def StartJob(  # noqa: N802 -- gRPC method name
        self, request_iterator: Iterator[pb.JobStartPart], context: grpc.ServicerContext
    ) -> pb.JobStarted:
        coordinator = self._caller(context)
        try:
            spec, fab = wire.job_start_from_parts(request_iterator)
            info = self._participant.start_job(coordinator, spec, fab)
        except NodeError as e:
            _log.warning("StartJob from %s refused: %s", coordinator, e)
            _abort(context, e)
            raise  # unreachable: abort raises
        except Exception as e:
            _fail(context, e, f"StartJob from {coordinator}")
            raise
        return wire.job_started_to_proto(info)

    def Deliver(  # noqa: N802 -- gRPC method name
        self, request_iterator: Iterator[pb.MessageChunk], context: grpc.ServicerContext
    ) -> Iterator[pb.MessageChunk]:
        coordinator = self._caller(context)
        # The reply is built in full before the first yield, so the stream slot is
        # released even when the caller never reads the reply.
        yield from self._deliver(coordinator, request_iterator, context)

    def _deliver(
        self,
        coordinator: str,
        request_iterator: Iterator[pb.MessageChunk],
        context: grpc.ServicerContext,
    ) -> list[pb.MessageChunk]:
        slot = self._stream_slot(coordinator)
        if not slot.acquire(blocking=False):
            _log.warning("Deliver from %s refused: too many open streams", coordinator)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {MAX_DELIVERS_PER_PEER} Deliver streams per peer at once",
            )
        try:

            def authorize(job_id: str) -> None:
                # Counts as word from the coordinator, as the Deliver itself does.
                self._participant.keep_job(coordinator, job_id)

            job_id, message = wire.message_from_chunks(request_iterator, authorize)
            reply = self._participant.deliver(coordinator, job_id, message)
            return list(wire.message_chunks(reply))
        except NodeError as e:
            _log.warning("Deliver from %s refused: %s", coordinator, e)
            _abort(context, e)
            raise
        except Exception as e:
            _fail(context, e, f"Deliver from {coordinator}")
            raise
        finally:
            slot.release()

    def EndJob(  # noqa: N802 -- gRPC method name
        self, request: pb.JobEnd, context: grpc.ServicerContext
    ) -> pb.JobEnded:
        coordinator = self._caller(context)
        try:
            end = wire.job_end_from_proto(request)
            self._participant.end_job(coordinator, end.job_id, end.outcome, end.reason)
        except NodeError as e:
            _abort(context, e)
            raise
        return pb.JobEnded()

    def KeepJob(  # noqa: N802 -- gRPC method name
        self, request: pb.JobAlive, context: grpc.ServicerContext
    ) -> pb.JobKept:
        coordinator = self._caller(context)
        try:
            self._participant.keep_job(coordinator, wire.job_alive_from_proto(request))
        except NodeError as e:
            _abort(context, e)
            raise
        return pb.JobKept()


def add_services(server: grpc.Server, runtime: Any) -> None:
    """Register the Federated service on the node's mTLS server."""
    participant = Participant(runtime)
    runtime.extensions[PARTICIPANT_KEY] = participant
    pb_grpc.add_FederatedServicer_to_server(FederatedServicer(participant), server)
