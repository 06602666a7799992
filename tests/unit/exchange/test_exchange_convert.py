"""The Exchange proto boundary, including the hand-built wire form of chunk frames."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import EnvelopeError, ExchangeError
from node.exchange import convert
from node.exchange.envelope import SealedChunk
from node.exchange.errors import MalformedEnvelopeError, ReceiptError
from protocols.fednode.v1 import exchange_pb2

AGREEMENT = "agr-" + "0123456789abcdef" * 2


@pytest.mark.parametrize("size", [0, 1, 118, 119, 120, 16_374, 16_375, 2_097_143, 4_194_000])
@pytest.mark.parametrize("final", [False, True])
def test_chunk_wire_form_equals_protobuf(size: int, final: bool) -> None:
    chunk = SealedChunk(index=2**40 + 3, final=final, sealed=bytes([size % 251]) * size)
    wire = convert.chunk_to_wire(chunk)
    assert wire == exchange_pb2.ShareFrame(chunk=chunk.frame).SerializeToString()
    kind, data = convert.frame_from_wire(wire)
    assert kind == "chunk" and bytes(data) == chunk.frame


@pytest.mark.parametrize("kind", ["header", "trailer"])
def test_header_and_trailer_round_trip(kind: str) -> None:
    wire = convert.frame_to_wire(kind, b"\x01" * 300)
    assert convert.frame_from_wire(wire) == (kind, memoryview(b"\x01" * 300))


def test_non_canonical_encodings_take_the_general_path() -> None:
    # A second, later chunk field wins under protobuf rules.
    wire = exchange_pb2.ShareFrame(chunk=b"a").SerializeToString()
    wire += exchange_pb2.ShareFrame(chunk=b"bb").SerializeToString()
    assert convert.frame_from_wire(wire) == ("chunk", b"bb")


@pytest.mark.parametrize(
    ("wire", "match"),
    [(b"", "neither header, chunk nor trailer"), (b"\x12\x05ab", "not a ShareFrame")],
)
def test_malformed_wire(wire: bytes, match: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=match):
        convert.frame_from_wire(wire)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_wire_parser_raises_only_envelope_errors(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        convert.frame_from_wire(data)


def test_receipt_and_request_conversion() -> None:
    receipt = {"receipt": {"v": 1}, "signature": "x"}
    assert convert.receipt_from_proto(convert.receipt_to_proto(receipt)) == receipt
    with pytest.raises(ReceiptError, match="not canonical JSON"):
        convert.receipt_from_proto(exchange_pb2.ShareReceipt(receipt_json=b"{ }"))
    request = convert.ShareRequest(AGREEMENT, ["a", "b"], "none")
    assert convert.share_request_from_proto(convert.share_request_to_proto(request)) == request
    default = convert.share_request_from_proto(exchange_pb2.ShareRequest(agreement_id=AGREEMENT))
    assert default == convert.ShareRequest(AGREEMENT, None, "zstd")
    with pytest.raises(ExchangeError, match="unknown compression 'brotli'"):
        convert.share_request_from_proto(
            exchange_pb2.ShareRequest(agreement_id=AGREEMENT, compression="brotli")
        )


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"agreement_id": "agr-1"}, "names no agreement id: 'agr-1'"),
        ({"agreement_id": "AGR-" + "0" * 32}, "names no agreement id"),
        ({"agreement_id": ""}, "names no agreement id"),
        # A request this long is refused, and the refusal quotes only its start.
        ({"agreement_id": "x" * 3_000_000}, r"names no agreement id: 'x+\.\.\. \(3000002 char"),
        (
            {"agreement_id": AGREEMENT, "columns": ["c"] * (convert.MAX_REQUEST_COLUMNS + 1)},
            "4097 columns",
        ),
        ({"agreement_id": AGREEMENT, "columns": ["c" * 70_000]}, "70000 characters"),
        ({"agreement_id": AGREEMENT, "compression": "z" * 1000}, r"'z+\.\.\. \(1002 char"),
    ],
)
def test_malformed_or_oversized_share_requests_are_refused_with_brief_messages(
    fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(ExchangeError, match=match) as refused:
        convert.share_request_from_proto(exchange_pb2.ShareRequest(**fields))
    assert len(str(refused.value)) < 200
