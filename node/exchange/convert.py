"""The one place where Exchange protobuf messages become domain values and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from ledger.canonical import dumps, loads
from ledger.errors import LedgerError
from node.agreements.document import SignedAgreement, is_agreement_id
from node.errors import AgreementError, ExchangeError, brief
from node.exchange.envelope import COMPRESSIONS, SealedChunk
from node.exchange.errors import MalformedEnvelopeError, ReceiptError
from protocols.fednode.v1 import exchange_pb2

__all__ = [
    "DEFAULT_COMPRESSION",
    "FETCH_METHOD",
    "FRAME_KINDS",
    "MAX_REQUEST_COLUMNS",
    "MAX_REQUEST_COLUMN_CHARS",
    "SERVICE_NAME",
    "ShareRequest",
    "agreement_from_proto",
    "agreement_to_proto",
    "chunk_to_wire",
    "frame_from_proto",
    "frame_from_wire",
    "frame_to_proto",
    "frame_to_wire",
    "receipt_from_proto",
    "receipt_to_proto",
    "revocation_from_proto",
    "revocation_to_proto",
    "share_request_from_proto",
    "share_request_to_proto",
    "share_request_to_wire",
]

FRAME_KINDS = ("header", "chunk", "trailer")
SERVICE_NAME = "fednode.v1.Exchange"
FETCH_METHOD = f"/{SERVICE_NAME}/Fetch"
#: Most columns a share request may name, and their most characters in all.
MAX_REQUEST_COLUMNS = 4096
MAX_REQUEST_COLUMN_CHARS = 64 * 1024
#: zstd unless the consumer asks otherwise: it costs less CPU than it saves on
#: encryption, hashing and transport for any table that compresses at all.
DEFAULT_COMPRESSION = "zstd"


@dataclass(frozen=True)
class ShareRequest:
    """What a consumer asks for: the agreement, optionally fewer columns, and a chunk codec."""

    agreement_id: str
    columns: list[str] | None = None
    compression: str = DEFAULT_COMPRESSION


def share_request_to_proto(request: ShareRequest) -> Any:
    return exchange_pb2.ShareRequest(
        agreement_id=request.agreement_id,
        columns=request.columns or [],
        compression=request.compression,
    )


def share_request_to_wire(request: Any) -> bytes:
    return bytes(request.SerializeToString())


def share_request_from_proto(message: Any) -> ShareRequest:
    """The request as a domain value; an empty compression means the default.

    The agreement id and the column names are what the provider looks up and
    records (also when it refuses), so their shape and size are checked here.

    Raises:
        ExchangeError: the agreement id is malformed, the columns exceed
            :data:`MAX_REQUEST_COLUMNS` names or :data:`MAX_REQUEST_COLUMN_CHARS`
            characters, or the compression is not one this node knows.
    """
    agreement_id = str(message.agreement_id)
    if not is_agreement_id(agreement_id):
        raise ExchangeError(
            f"share request names no agreement id: {brief(agreement_id)}",
            hint="agreement ids are agr- and 32 hex digits ('fednode agreement list')",
        )
    columns = [str(name) for name in message.columns]
    if len(columns) > MAX_REQUEST_COLUMNS or sum(map(len, columns)) > MAX_REQUEST_COLUMN_CHARS:
        raise ExchangeError(
            f"share request names {len(columns)} columns of {sum(map(len, columns))} characters, "
            f"above {MAX_REQUEST_COLUMNS} or {MAX_REQUEST_COLUMN_CHARS}"
        )
    compression = str(message.compression) or DEFAULT_COMPRESSION
    if compression not in COMPRESSIONS:
        raise ExchangeError(
            f"unknown compression {brief(compression)} requested",
            hint="ask for " + " or ".join(COMPRESSIONS),
        )
    return ShareRequest(agreement_id, columns or None, compression)


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


# Chunks are most of a share's bytes. Encoding a ShareFrame's wire form
# directly (field tag, varint length, frame) saves building a message object
# and two copies of every 4 MiB chunk; the result is byte-for-byte what
# ``ShareFrame(chunk=frame).SerializeToString()`` gives, which a test checks.
_TAGS = {"header": 0x0A, "chunk": 0x12, "trailer": 0x1A}
_KINDS = {tag: kind for kind, tag in _TAGS.items()}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def chunk_to_wire(chunk: SealedChunk) -> bytes:
    """The serialized ShareFrame holding ``chunk``'s frame, built with one copy."""
    prefix = chunk.prefix
    return b"".join(
        [bytes([_TAGS["chunk"]]), _varint(len(prefix) + len(chunk.sealed)), prefix, chunk.sealed]
    )


def frame_to_wire(kind: str, data: bytes) -> bytes:
    """The serialized ShareFrame holding a header or trailer frame."""
    return bytes(frame_to_proto(kind, data).SerializeToString())


def frame_from_wire(data: bytes) -> tuple[str, bytes | memoryview]:
    """Split a serialized ShareFrame into its kind and frame bytes (a view, without copying).

    Raises:
        MalformedEnvelopeError: the bytes are not a ShareFrame holding one frame.
    """
    if data and data[0] in _KINDS:
        length, shift, pos = 0, 0, 1
        while pos < len(data) and pos <= 5:
            byte = data[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                if pos + length == len(data):
                    return _KINDS[data[0]], memoryview(data)[pos:]
                break
            shift += 7
    # Any other valid encoding (extra or repeated fields) takes the general path.
    try:
        message = exchange_pb2.ShareFrame.FromString(data)
    except DecodeError as e:
        raise MalformedEnvelopeError(f"share frame is not a ShareFrame message: {e}") from e
    return frame_from_proto(message)


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


def revocation_to_proto(notice: dict[str, Any]) -> Any:
    return exchange_pb2.RevocationNotice(notice_json=dumps(notice))


def revocation_from_proto(message: Any) -> Any:
    """The notice object (signature not yet checked).

    Raises:
        AgreementError: the bytes are not canonical JSON.
    """
    try:
        return loads(bytes(message.notice_json))
    except LedgerError as e:
        raise AgreementError(f"revocation notice is not canonical JSON: {e}") from e


def agreement_to_proto(signed: SignedAgreement) -> Any:
    return exchange_pb2.AgreementSubmission(agreement_json=signed.to_bytes())


def agreement_from_proto(message: Any) -> SignedAgreement:
    """The submitted agreement (signatures not yet checked).

    Raises:
        AgreementError: the bytes are not a well-formed signed agreement.
    """
    return SignedAgreement.from_bytes(bytes(message.agreement_json))
