"""The ``Federated`` gRPC service: the participant's network face.

The coordinator's identity comes only from its verified client certificate
(:func:`node.server.peer.caller_department`). Errors map to gRPC status codes
with short public messages; details stay in the local log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc

from node.errors import AccessDenied, AgreementError, CatalogError, NodeError
from node.fl import wire
from node.fl.errors import AppBundleError, UnknownJobError, WireError
from node.fl.participant import Participant
from protocols.fednode.v1 import federated_pb2 as pb
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc

__all__ = ["PARTICIPANT_KEY", "FederatedServicer", "add_services"]

_log = logging.getLogger(__name__)

#: Key of the Participant in ``runtime.extensions``.
PARTICIPANT_KEY = "fl.participant"

_STATUS: list[tuple[type[NodeError], grpc.StatusCode, str]] = [
    (AccessDenied, grpc.StatusCode.PERMISSION_DENIED, "denied by node policy"),
    (AgreementError, grpc.StatusCode.PERMISSION_DENIED, "agreement does not allow this job"),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT, "malformed request"),
    (UnknownJobError, grpc.StatusCode.NOT_FOUND, "no such job"),
    (CatalogError, grpc.StatusCode.FAILED_PRECONDITION, "dataset unavailable"),
    (AppBundleError, grpc.StatusCode.FAILED_PRECONDITION, "app bundle unusable"),
]


def _abort(context: grpc.ServicerContext, error: NodeError) -> None:
    for kind, code, public in _STATUS:
        if isinstance(error, kind):
            # Denial reasons are the caller's business (it must fix its job); others are not.
            text = (
                f"{public}: {error}"
                if kind in (AccessDenied, AgreementError, WireError)
                else public
            )
            context.abort(code, text)
    context.abort(grpc.StatusCode.INTERNAL, "federated job failed at the participant")


class FederatedServicer(pb_grpc.FederatedServicer):  # type: ignore[misc]
    """Routes StartJob / Deliver / EndJob / KeepJob to the node's :class:`Participant`."""

    def __init__(self, participant: Participant, caller: Any = None) -> None:
        self._participant = participant
        if caller is None:
            from node.server.peer import caller_department  # noqa: PLC0415 -- server is optional in unit tests

            caller = caller_department
        self._caller = caller

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
        return wire.job_started_to_proto(info)

    def Deliver(  # noqa: N802 -- gRPC method name
        self, request_iterator: Iterator[pb.MessageChunk], context: grpc.ServicerContext
    ) -> Iterator[pb.MessageChunk]:
        coordinator = self._caller(context)
        try:
            job_id, message = wire.message_from_chunks(request_iterator)
            reply = self._participant.deliver(coordinator, job_id, message)
        except NodeError as e:
            _log.warning("Deliver from %s refused: %s", coordinator, e)
            _abort(context, e)
            raise
        yield from wire.message_chunks(reply)

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
