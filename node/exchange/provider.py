"""The provider side of a share: authorize, scan, treat, seal and stream.

Three threads overlap: one reads the dataset and applies the agreement's
treatments (at most :data:`READ_AHEAD` batches ahead), one encodes and seals
chunks (compression, AES-GCM and SHA-256 release the GIL; encoding itself
runs on the envelope's worker threads), and the caller's thread hands frames
to gRPC (at most :data:`WINDOW` frames ahead). Memory is therefore bounded by
a few batches and chunks whatever the table size.

Invariants:

* nothing is read before the agreement is authorized for this consumer and
  the ``transfer`` mode;
* the agreement is re-checked before every chunk is handed out and before the
  final chunk and trailer, so a revocation or expiry ends the share at once,
  without a valid trailer;
* a share counts as sent (``share.sent``) only when the consumer's receipt for
  exactly this share_id, digest and row count verifies, and it is recorded
  once per share however many times the receipt arrives, even concurrently
  (see :func:`accept_receipt`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from node.agreements.policy import agreements_of, deny, recheck
from node.catalog.loader import treated_scan
from node.errors import AccessDenied, NodeError
from node.exchange.envelope import SHARE_ID_LEN, EnvelopeSealer, SealedChunk
from node.exchange.errors import ReceiptError
from node.exchange.readahead import read_ahead
from node.exchange.receipt import verify_receipt
from node.exchange.store import ExchangeStore, SentShare

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "WINDOW",
    "accept_receipt",
    "exchange_store_of",
    "record_unrecorded_receipts",
    "stream_share",
]

log = logging.getLogger("fednode.exchange")

#: Frames buffered between the sealing thread and the sender.
WINDOW = 4
#: Treated batches read ahead of sealing (batches of 256 Ki rows: tens of MB each).
READ_AHEAD = 2
_EXTENSION = "exchange"
_lock = threading.Lock()


def exchange_store_of(runtime: NodeRuntime) -> ExchangeStore:
    """The runtime's exchange store, opened on first use under the data directory."""
    with _lock:
        store = runtime.extensions.get(_EXTENSION)
        if not isinstance(store, ExchangeStore):
            store = ExchangeStore(runtime.config.data_dir / "exchange.db")
            runtime.extensions[_EXTENSION] = store
        return store


def stream_share(
    runtime: NodeRuntime,
    *,
    consumer: str,
    agreement_id: str,
    columns: list[str] | None = None,
    compression: str = "zstd",
) -> Generator[tuple[str, bytes | SealedChunk], None, None]:
    """Yield the frames of one share to ``consumer``: ``("header", bytes)``, then
    ``("chunk", SealedChunk)`` for each chunk, then ``("trailer", bytes)``.

    Raises:
        AccessDenied: no active agreement grants ``transfer`` to ``consumer``
            (recorded as access.denied), or it was revoked or expired mid-stream.
        AgreementError, CatalogError, ExchangeError: the share cannot be built.
    """
    scan = treated_scan(runtime, agreement_id, "transfer", peer=consumer, columns=columns)
    record = agreements_of(runtime).get(agreement_id)
    signed = record.signed
    entry = runtime.directory.get(consumer)
    sealer = EnvelopeSealer(
        signing_key=runtime.signing_key,
        sender=runtime.department,
        recipient=consumer,
        recipient_hpke_public=entry.hpke_public,
        agreement=agreement_id,
        dataset=signed.dataset,
        schema=scan.schema,
        compression=compression,
        rows_hint=scan.info.rows,
    )
    shared = scan.schema.names

    def produce() -> Iterator[tuple[str, bytes | SealedChunk]]:
        for batch in read_ahead(scan.batches(), READ_AHEAD, "share-read"):
            for chunk in sealer.add_sealed(batch):
                yield "chunk", chunk
        chunks, trailer = sealer.finish_sealed()
        for chunk in chunks:
            yield "chunk", chunk
        yield "trailer", trailer

    def note(event: str, **fields: Any) -> None:
        """Record ``event`` about this share: its consumer, agreement, dataset and columns."""
        runtime.audit.record(
            event,
            peer=consumer,
            agreement=agreement_id,
            dataset=signed.dataset,
            columns=shared,
            **fields,
        )

    note(
        "share.started",
        purpose=signed.purpose,
        detail={"share_id": sealer.share_id.hex(), "compression": compression},
    )

    def failed(reason: str) -> None:
        note(
            "share.failed",
            outcome="error",
            detail={"share_id": sealer.share_id.hex(), "reason": reason},
        )

    yield "header", sealer.header
    frames = read_ahead(produce(), WINDOW, "share-sealer")
    try:
        for kind, frame in frames:
            # Re-checked per chunk: a revocation stops the share before the next chunk.
            recheck(runtime, agreement_id)
            if kind == "trailer":
                # Recorded before the trailer leaves, so the receipt can never outrun it.
                exchange_store_of(runtime).record_sent(
                    SentShare(
                        share_id=sealer.share_id,
                        consumer=consumer,
                        agreement=agreement_id,
                        dataset=signed.dataset,
                        columns=shared,
                        purpose=signed.purpose,
                        digest=sealer.digest_text,
                        rows=sealer.rows,
                        chunks=sealer.chunks,
                        receipt=None,
                    )
                )
            yield kind, frame
    except AccessDenied as e:
        deny(
            runtime,
            f"share {sealer.share_id.hex()} stopped: {e}",
            peer=consumer,
            agreement=agreement_id,
            dataset=signed.dataset,
            columns=shared,
        )
    except NodeError as e:
        failed(str(e))
        raise
    except GeneratorExit:
        # Closed before the end: the consumer left (its own revocation check, a
        # cancellation, a lost link). Recorded, so every share.started has an end.
        failed("the consumer ended the share before its end")
        raise
    finally:
        frames.close()


def accept_receipt(runtime: NodeRuntime, consumer: str, receipt: dict[str, Any]) -> int:
    """Verify a consumer's receipt for a share this node streamed, and record ``share.sent``.

    Returns the ledger sequence number of the ``share.sent`` entry.

    The receipt is attached to the share (a single conditional update) before
    ``share.sent`` is recorded, so of concurrent callers with the same receipt
    exactly one records it. Should the node stop between the two, the share
    holds a receipt without a ledger entry, and :func:`record_unrecorded_receipts`
    records it at the next start: ``share.sent`` is never lost, and can be
    recorded twice only if the node stops in the instant after the ledger
    append and before the store notes its sequence number.

    Raises:
        ReceiptError: malformed, badly signed, for an unknown share, the
            fields differ from what was sent, or the share has a receipt already.
    """
    body = receipt.get("receipt") if isinstance(receipt, dict) else None
    share_hex = body.get("share_id") if isinstance(body, dict) else None
    try:
        share_id = bytes.fromhex(str(share_hex))
    except ValueError as e:
        raise ReceiptError("receipt share_id is not hex") from e
    if len(share_id) != SHARE_ID_LEN:
        raise ReceiptError(f"receipt share_id is {len(share_id)} bytes, not {SHARE_ID_LEN}")
    store = exchange_store_of(runtime)
    sent = store.sent(share_id)
    if sent is None or sent.consumer != consumer:
        raise ReceiptError(f"no completed share {share_id.hex()} to {consumer} on this node")
    if sent.receipt is not None:
        raise ReceiptError(f"share {share_id.hex()} already has a receipt")
    verify_receipt(
        receipt,
        runtime.directory.get(consumer).ed25519_public,
        {
            "share_id": share_id.hex(),
            "digest": sent.digest,
            "rows": sent.rows,
            "chunks": sent.chunks,
            "sender": runtime.department,
            "recipient": consumer,
            "agreement": sent.agreement,
        },
    )
    # The claim: only one caller gets past this line for a share.
    store.attach_receipt(share_id, receipt)
    seq = _record_sent(runtime, sent, receipt)
    store.mark_recorded(share_id, seq)
    return seq


def record_unrecorded_receipts(runtime: NodeRuntime) -> int:
    """Record ``share.sent`` for shares whose receipt was stored but never recorded.

    Run when the node starts, before it serves: the node stopped between
    storing a receipt and recording it. Returns how many were recorded.
    """
    store = exchange_store_of(runtime)
    pending = store.unrecorded()
    for sent in pending:
        assert sent.receipt is not None
        log.warning(
            "recording share.sent for share %s: its receipt arrived before the node last stopped",
            sent.share_id.hex(),
        )
        store.mark_recorded(sent.share_id, _record_sent(runtime, sent, sent.receipt))
    return len(pending)


def _record_sent(runtime: NodeRuntime, sent: SentShare, receipt: dict[str, Any]) -> int:
    return runtime.audit.record(
        "share.sent",
        peer=sent.consumer,
        agreement=sent.agreement,
        dataset=sent.dataset,
        columns=sent.columns,
        purpose=sent.purpose,
        digest=sent.digest,
        outcome="ok",
        detail={
            "share_id": sent.share_id.hex(),
            "rows": sent.rows,
            "chunks": sent.chunks,
            "receipt": receipt,
        },
    )
