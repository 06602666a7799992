"""The one place where Exchange protobuf messages become domain values and back."""

from __future__ import annotations

from typing import Any

from ledger.canonical import dumps, loads
from ledger.errors import LedgerError
from node.agreements.document import SignedAgreement
from node.exchange.errors import MalformedEnvelopeError, ReceiptError
from protocols.fednode.v1 import exchange_pb2

__all__ = [
    "FRAME_KINDS",
    "agreement_from_proto",
    "agreement_to_proto",
    "frame_from_proto",
    "frame_to_proto",
    "receipt_from_proto",
    "receipt_to_proto",
    "share_request_from_proto",
    "share_request_to_proto",
]

FRAME_KINDS = ("header", "chunk", "trailer")


def share_request_to_proto(agreement_id: str, columns: list[str] | None) -> Any:
    return exchange_pb2.ShareRequest(agreement_id=agreement_id, columns=columns or [])


def share_request_from_proto(message: Any) -> tuple[str, list[str] | None]:
    return str(message.agreement_id), list(message.columns) or None


def frame_to_proto(kind: str, data: bytes) -> Any:
    if kind == "header":
        return exchange_pb2.ShareFrame(header=data)
    if kind == "chunk":
        return exchange_pb2.ShareFrame(chunk=data)
    return exchange_pb2.ShareFrame(trailer=data)


def frame_from_proto(message: Any) -> tuple[str, bytes]:
    """The frame's kind and bytes.

    Raises:
        MalformedEnvelopeError: the message holds no frame.
    """
    kind = message.WhichOneof("frame")
    if kind not in FRAME_KINDS:
        raise MalformedEnvelopeError("share frame holds neither header, chunk nor trailer")
    return str(kind), bytes(getattr(message, kind))


def receipt_to_proto(receipt: dict[str, Any]) -> Any:
    return exchange_pb2.ShareReceipt(receipt_json=dumps(receipt))


def receipt_from_proto(message: Any) -> dict[str, Any]:
    """The receipt object (signature not yet checked).

    Raises:
        ReceiptError: the bytes are not a canonical JSON object.
    """
    try:
        receipt = loads(bytes(message.receipt_json))
    except LedgerError as e:
        raise ReceiptError(f"receipt is not canonical JSON: {e}") from e
    if not isinstance(receipt, dict):
        raise ReceiptError("receipt is not a JSON object")
    return receipt


def agreement_to_proto(signed: SignedAgreement) -> Any:
    return exchange_pb2.AgreementSubmission(agreement_json=signed.to_bytes())


def agreement_from_proto(message: Any) -> SignedAgreement:
    """The submitted agreement (signatures not yet checked).

    Raises:
        AgreementError: the bytes are not a well-formed signed agreement.
    """
    return SignedAgreement.from_bytes(bytes(message.agreement_json))
