"""The Exchange gRPC service on the network port (provider side of shares and agreements).

Who the caller is comes only from its verified certificate
(:func:`node.server.peer.caller_department`). Errors become gRPC statuses
with short public messages; details go to the local log. Access refusals are
recorded in the ledger by the policy layer before the status is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from node.agreements.revocation import accept_notice
from node.agreements.store import AgreementRecord
from node.agreements.workflow import accept_countersigned
from node.errors import (
    AccessDenied,
    AgreementError,
    CatalogError,
    DirectoryError,
    ExchangeError,
    NodeError,
)
from node.exchange import convert
from node.exchange.envelope import SealedChunk
from node.exchange.errors import ReceiptError
from node.exchange.memory import tune_allocator
from node.exchange.provider import accept_receipt, record_unrecorded_receipts, stream_share
from node.server.peer import caller_department
from protocols.fednode.v1 import exchange_pb2, exchange_pb2_grpc

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["ExchangeService", "add_services"]

log = logging.getLogger("fednode.exchange")


def _abort(context: grpc.ServicerContext, error: NodeError) -> NoReturn:
    """Map a domain error to a status with a public message, and stop the call."""
    if isinstance(error, AccessDenied | DirectoryError):
        code, message = grpc.StatusCode.PERMISSION_DENIED, str(error)
    elif isinstance(error, ReceiptError):
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
    elif isinstance(error, AgreementError):
        code, message = grpc.StatusCode.FAILED_PRECONDITION, str(error)
    elif isinstance(error, CatalogError):
        # Catalog messages may hold local paths; the peer learns only that the data is unavailable.
        code, message = (
            grpc.StatusCode.FAILED_PRECONDITION,
            "the agreement's dataset is unavailable at the provider; its operator sees "
            "why in 'fednode dataset list' and the node log",
        )
    else:
        code, message = grpc.StatusCode.INTERNAL, "the share failed on the provider"
    hint = getattr(error, "hint", None) or (
        "see 'fednode dataset show NAME'" if isinstance(error, CatalogError) else None
    )
    log.warning(
        "exchange call refused (%s): %s%s", code.name, error, f" (hint: {hint})" if hint else ""
    )
    context.abort(code, message)
    raise AssertionError("ServicerContext.abort returned")


class ExchangeService(exchange_pb2_grpc.ExchangeServicer):  # type: ignore[misc]
    def __init__(self, runtime: NodeRuntime) -> None:
        self._runtime = runtime

    def Fetch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        consumer = caller_department(context)
        try:
            share = convert.share_request_from_proto(request)
        except NodeError as e:
            # Recorded like any refused access; the message quotes the request only briefly.
            self._runtime.audit.record(
                "access.denied",
                peer=consumer,
                outcome="denied",
                detail={"reason": f"malformed share request: {e}"},
            )
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("ServicerContext.abort returned") from e
        agreement_id = share.agreement_id
        frames = stream_share(
            self._runtime,
            consumer=consumer,
            agreement_id=agreement_id,
            columns=share.columns,
            compression=share.compression,
        )
        try:
            for kind, data in frames:
                if not context.is_active():
                    log.info("consumer %s left share of %s", consumer, agreement_id)
                    return
                if isinstance(data, SealedChunk):
                    yield convert.chunk_to_wire(data)
                else:
                    yield convert.frame_to_wire(kind, data)
        except NodeError as e:
            _abort(context, e)
        finally:
            frames.close()

    def Acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        consumer = caller_department(context)
        try:
            seq = accept_receipt(self._runtime, consumer, convert.receipt_from_proto(request))
        except (ReceiptError, DirectoryError, ExchangeError) as e:
            _abort(context, e)
        return exchange_pb2.ReceiptAck(ledger_seq=seq)

    def SubmitAgreement(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        submitter = caller_department(context)

        def submit() -> AgreementRecord:
            signed = convert.agreement_from_proto(request)
            if signed.provider != self._runtime.department:
                raise AgreementError(f"agreement {signed.id} is not provided by this node")
            return accept_countersigned(self._runtime, signed, submitted_by=submitter)

        record = self._agreement_call(context, submitter, "agreement submission", submit)
        return exchange_pb2.AgreementAck(state=record.state)

    def Revoke(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        caller = caller_department(context)
        record = self._agreement_call(
            context,
            caller,
            "revocation notice",
            lambda: accept_notice(self._runtime, caller, convert.revocation_from_proto(request)),
        )
        return exchange_pb2.RevocationAck(state=record.state)

    def _agreement_call(
        self,
        context: grpc.ServicerContext,
        caller: str,
        what: str,
        call: Callable[[], AgreementRecord],
    ) -> AgreementRecord:
        """Run ``call``; a refused agreement step is recorded as access.denied, then aborted."""
        try:
            return call()
        except AgreementError as e:
            self._runtime.audit.record(
                "access.denied",
                peer=caller,
                outcome="denied",
                detail={"reason": f"{what} refused: {e}"},
            )
            _abort(context, e)
        except DirectoryError as e:
            _abort(context, e)


def _raw(data: bytes) -> bytes:
    return data


def add_services(server: grpc.Server, runtime: NodeRuntime) -> None:
    """Mount the Exchange service on the node's network server.

    ``Fetch`` yields ShareFrame messages already in wire form (see
    :func:`node.exchange.convert.chunk_to_wire`), so its serializer passes
    bytes through; the other methods use the generated message classes. It
    also applies the exchange allocator policy (:mod:`node.exchange.memory`),
    and records ``share.sent`` for receipts stored but not yet recorded when
    the node last stopped.
    """
    # Shares stream chunk-sized buffers through this process for as long as it serves.
    tune_allocator()
    # Before any receipt can arrive: a receipt stored just before the node last
    # stopped still gets its share.sent entry.
    try:
        record_unrecorded_receipts(runtime)
    except Exception:
        # The node serves anyway; the shares stay pending and the next start tries again.
        log.exception("could not record share.sent for receipts stored before the last stop")
    service = ExchangeService(runtime)
    handlers = {
        "Fetch": grpc.unary_stream_rpc_method_handler(
            service.Fetch,
            request_deserializer=exchange_pb2.ShareRequest.FromString,
            response_serializer=_raw,
        ),
        "Acknowledge": grpc.unary_unary_rpc_method_handler(
            service.Acknowledge,
            request_deserializer=exchange_pb2.ShareReceipt.FromString,
            response_serializer=exchange_pb2.ReceiptAck.SerializeToString,
        ),
        "SubmitAgreement": grpc.unary_unary_rpc_method_handler(
            service.SubmitAgreement,
            request_deserializer=exchange_pb2.AgreementSubmission.FromString,
            response_serializer=exchange_pb2.AgreementAck.SerializeToString,
        ),
        "Revoke": grpc.unary_unary_rpc_method_handler(
            service.Revoke,
            request_deserializer=exchange_pb2.RevocationNotice.FromString,
            response_serializer=exchange_pb2.RevocationAck.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(convert.SERVICE_NAME, handlers),)
    )
