"""The consumer side of a share: fetch, verify, write atomically, record, and sign a receipt.

Invariants:

* the output path changes only after the trailer verified (every chunk
  authenticated, in order, the final chunk present, counts and digest equal);
  on any failure the temporary file is removed and nothing is visible;
* the agreement is checked again after the trailer verified and before the
  output is renamed into place: a share that completes after its agreement
  expired or was revoked is discarded like any other failed share;
* ``share.received`` is recorded, and the receipt sent, only after the output
  was renamed into place;
* the share_id is claimed in the exchange store before the first chunk, so a
  replayed header is refused even across restarts;
* once the provider was asked, every failure, expected or not, is recorded as
  ``share.failed`` before it reaches the caller, and reaches it as a
  :class:`~node.errors.NodeError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from node.admin.cancel import check_cancelled
from node.agreements.document import SignedAgreement
from node.agreements.policy import authorize, recheck
from node.catalog.treatments import produces
from node.errors import AccessDenied, ExchangeError, NodeError, PeerError
from node.exchange import convert
from node.exchange.envelope import EnvelopeOpener, Header
from node.exchange.errors import OutsideAgreementError
from node.exchange.memory import tune_allocator
from node.exchange.provider import exchange_store_of
from node.exchange.readahead import read_ahead
from node.exchange.receipt import make_receipt
from node.exchange.sink import OVERWRITE_FLAG, AtomicTableSink, output_format
from node.output_path import check_output
from protocols.fednode.v1 import exchange_pb2_grpc

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["FetchResult", "check_header", "fetch_share"]

#: Deadline of a whole share; large shares on slow links need hours, not seconds.
DEFAULT_DEADLINE_S = 6 * 3600.0
_RECEIPT_DEADLINE_S = 30.0
_PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class FetchResult:
    share_id: str
    path: str
    format: str
    rows: int
    chunks: int
    bytes: int
    digest: str
    seconds: float
    receipt_acknowledged: bool
    provider_ledger_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: Frames received ahead of verification: one chunk window (4 chunks of at most 4 MiB),
#: enough to keep the receive thread busy while a chunk is opened and written.
WINDOW = 4
_END = object()
_WRITE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="share-write")


def _paced(call: Iterator[Any], limit_rate: int | None) -> Iterator[Any]:
    """Pass frames through, sleeping as needed to stay under ``limit_rate`` bytes per second.

    Pacing the reads themselves lets gRPC flow control slow the sender
    instead of frames piling up here.
    """
    started = time.monotonic()
    received = 0
    for message in call:
        yield message
        if limit_rate:
            received += len(message[1])
            ahead = received / limit_rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def _prefetch(call: Iterator[Any], limit_rate: int | None = None) -> Generator[Any, None, None]:
    """Receive frames on a helper thread, so receiving overlaps decrypting and writing.

    At most :data:`WINDOW` frames wait; transport errors are re-raised in order.
    """
    return read_ahead(_paced(call, limit_rate), WINDOW, "share-receive")


class _OrderedWrites:
    """Batch writes on a worker thread, one at a time and in order, at most one queued."""

    def __init__(self) -> None:
        self._pending: Future[None] | None = None

    def submit(self, write: Callable[[Any], None], batch: Any) -> None:
        self.settle()
        self._pending = _WRITE_POOL.submit(write, batch)

    def settle(self, *, raise_errors: bool = True) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except NodeError:
            if raise_errors:
                raise


def _peer_error(provider: str, error: grpc.RpcError) -> NodeError:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AccessDenied(f"{provider} refused the share: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return AccessDenied(f"{provider} cannot serve the share: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerError(f"share from {provider} did not finish before its deadline")
    name = code.name if code is not None else "UNKNOWN"
    return PeerError(f"share from {provider} failed ({name}): {details}")


def fetch_share(
    runtime: NodeRuntime,
    *,
    provider: str,
    agreement_id: str,
    out: Path,
    fmt: str | None = None,
    columns: list[str] | None = None,
    compression: str = convert.DEFAULT_COMPRESSION,
    overwrite: bool = False,
    validate: bool = False,
    limit_rate: int | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> FetchResult:
    """Fetch one share from ``provider`` under ``agreement_id`` into ``out``.

    ``limit_rate`` caps the receive rate in bytes per second (flow control
    slows the provider to match). ``compression`` is the buffer codec asked of
    the provider (``zstd`` or ``none``). ``validate`` decodes and fully
    validates every batch of an Arrow output too (Parquet output always is).

    Raises:
        UnknownPeerError: the provider is not in the directory.
        AccessDenied: this node's agreement, or the provider, refused; or the
            agreement expired or was revoked before the share completed.
        EnvelopeError: the stream failed verification (tampered, truncated, ...).
        OutsideAgreementError: the provider sent another dataset, or columns
            the agreement does not share or that were not asked for.
        PeerError: the provider could not be reached or the stream broke.
        OutputError: ``out`` exists (without ``overwrite``), or its folder is
            missing or not writable (checked before the provider is asked).
        ExchangeError: the output cannot be written.
    """
    runtime.directory.get(provider)
    tune_allocator()
    record = authorize(runtime, agreement_id, mode="transfer", role="consumer", peer=provider)
    signed = record.signed
    # Before the provider is asked: a bad --out must not cost it a share.
    check_output(out, overwrite=overwrite, overwrite_flag=OVERWRITE_FLAG)
    fmt = output_format(out, fmt)
    started = time.monotonic()
    opener = EnvelopeOpener(
        recipient=runtime.department,
        hpke=runtime.hpke,
        sender_key=lambda dept: runtime.directory.get(dept).ed25519_public,
        expected_sender=provider,
        expected_agreement=agreement_id,
        replay=exchange_store_of(runtime),
    )
    stub = exchange_pb2_grpc.ExchangeStub(runtime.peer_channel(provider))
    # Frames arrive as wire bytes and are split without copying (convert.frame_from_wire).
    fetch = runtime.peer_channel(provider).unary_stream(
        convert.FETCH_METHOD,
        request_serializer=convert.share_request_to_wire,
        response_deserializer=convert.frame_from_wire,
    )
    request = convert.ShareRequest(agreement_id, columns, compression)
    call = fetch(convert.share_request_to_proto(request), timeout=deadline_s)
    sink: AtomicTableSink | None = None
    writes = _OrderedWrites()
    received = 0
    last = 0.0
    frames = _prefetch(call, limit_rate)
    try:
        for kind, data in frames:
            # Ctrl-C in the CLI: stop here, and the output is removed below.
            check_cancelled()
            received += len(data)
            if kind == "header":
                opened = opener.open_header(data)
                # Before anything is written: a provider cannot make this node keep
                # data its agreement does not share, or that it did not ask for.
                check_header(opened, signed, columns)
                sink = AtomicTableSink(
                    out, opened.schema, fmt, overwrite=overwrite, validate=validate
                )
                if emit:
                    emit(
                        {
                            "event": "header",
                            "share_id": opened.share_id.hex(),
                            "columns": opened.schema.names,
                            "rows_expected": opened.rows_hint,
                        }
                    )
            elif kind == "chunk":
                if sink is None:
                    opener.open_chunk(data)  # raises: chunk before header
                    continue
                # A revocation (this node's own, or the provider's notice) stops the
                # share at the next chunk, whatever the provider and the buffers
                # between the two nodes still hold.
                recheck(runtime, agreement_id)
                message = opener.open_chunk(data)
                if message is not None:
                    writes.submit(sink.write, message)
            else:
                opener.open_trailer(data)
            now = time.monotonic()
            if emit and (now - last >= _PROGRESS_EVERY_S or kind == "trailer"):
                last = now
                elapsed = max(now - started, 1e-9)
                emit(
                    {
                        "event": "progress",
                        "rows": opener.rows,
                        "bytes": received,
                        "chunks": opener.chunks,
                        "seconds": elapsed,
                        "bytes_per_second": int(received / elapsed),
                    }
                )
        opener.end_of_stream()
        if sink is None:
            raise ExchangeError("share ended without a header")
        writes.settle()
        check_cancelled()  # the last moment a cancellation can still undo the share
        # Authorization was checked when the share started; an agreement that
        # expired or was revoked while it ran must not leave a kept output.
        recheck(runtime, agreement_id)
        sink.commit()
    except grpc.RpcError as e:
        error = _peer_error(provider, e)
        _record_failure(runtime, provider, signed.dataset, agreement_id, opener, str(error))
        raise error from e
    except NodeError as e:
        _record_failure(runtime, provider, signed.dataset, agreement_id, opener, str(e))
        raise
    except Exception as e:
        # Whatever went wrong, the ledger says the share failed; an unexpected
        # error is reported as an exchange failure, its cause kept for --debug.
        failure = ExchangeError(f"share from {provider} failed: {type(e).__name__}: {e}")
        _record_failure(runtime, provider, signed.dataset, agreement_id, opener, str(failure))
        raise failure from e
    finally:
        frames.close()
        call.cancel()
        writes.settle(raise_errors=False)
        if sink is not None and not sink.committed:
            sink.abort()
    header = opener.header
    trailer = opener.trailer
    assert header is not None and trailer is not None
    columns_shared = header.schema.names
    runtime.audit.record(
        "share.received",
        peer=provider,
        agreement=agreement_id,
        dataset=signed.dataset,
        columns=columns_shared,
        purpose=signed.purpose,
        digest=trailer.digest_text,
        detail={"share_id": header.share_id.hex(), "rows": trailer.rows, "chunks": trailer.chunks},
    )
    receipt = make_receipt(
        runtime.signing_key,
        share_id=header.share_id,
        digest=trailer.digest_text,
        rows=trailer.rows,
        chunks=trailer.chunks,
        sender=provider,
        recipient=runtime.department,
        agreement=agreement_id,
        time=int(time.time()),
    )
    acknowledged, seq = True, None
    try:
        ack = stub.Acknowledge(convert.receipt_to_proto(receipt), timeout=_RECEIPT_DEADLINE_S)
        seq = int(ack.ledger_seq)
    except grpc.RpcError as e:
        acknowledged = False
        runtime.audit.record(
            "share.receipt_failed",
            peer=provider,
            agreement=agreement_id,
            outcome="error",
            detail={"share_id": header.share_id.hex(), "reason": str(_peer_error(provider, e))},
        )
    return FetchResult(
        share_id=header.share_id.hex(),
        path=str(out),
        format=fmt,
        rows=trailer.rows,
        chunks=trailer.chunks,
        bytes=received,
        digest=trailer.digest_text,
        seconds=time.monotonic() - started,
        receipt_acknowledged=acknowledged,
        provider_ledger_seq=seq,
    )


def check_header(header: Header, signed: SignedAgreement, columns: list[str] | None) -> None:
    """Check that a verified header carries what the agreement shares and what was asked.

    The header must name the agreement's dataset; its columns must each
    appear once, be shared by the agreement (not dropped), have a type their
    treatment produces, and be exactly ``columns`` when given, otherwise every
    column the agreement shares. Their order is the provider's (its
    dataset's), so only the set is compared.

    Raises:
        OutsideAgreementError: the header does not fit.
        MalformedEnvelopeError: its schema does not parse.
    """
    where = f"agreement {signed.id}"
    if header.dataset != signed.dataset:
        raise OutsideAgreementError(
            f"the share is of dataset {header.dataset!r}; {where} covers {signed.dataset!r}"
        )
    schema = header.schema
    names = schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OutsideAgreementError(f"the share names columns twice: {', '.join(twice)}")
    spec = signed.columns
    shared = set(signed.shared_columns)
    outside = sorted(set(names) - shared)
    if outside:
        raise OutsideAgreementError(
            f"the share holds columns {where} does not share: {', '.join(outside)}"
        )
    asked = set(columns) if columns else shared
    if set(names) != asked:
        extra, missing = sorted(set(names) - asked), sorted(asked - set(names))
        raise OutsideAgreementError(
            "the share's columns are not the ones asked for"
            + (f"; not asked for: {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    for field in schema:
        treatment = spec[field.name]
        if not produces(treatment, field.type):
            raise OutsideAgreementError(
                f"column {field.name!r} arrived as {field.type}, which its treatment "
                f"({treatment['treatment']}) in {where} does not produce"
            )


def _record_failure(
    runtime: NodeRuntime,
    provider: str,
    dataset: str,
    agreement_id: str,
    opener: EnvelopeOpener,
    reason: str,
) -> None:
    detail: dict[str, object] = {"reason": reason, "chunks": opener.chunks}
    if opener.header is not None:
        detail["share_id"] = opener.header.share_id.hex()
    runtime.audit.record(
        "share.failed",
        peer=provider,
        agreement=agreement_id,
        dataset=dataset,
        outcome="error",
        detail=detail,
    )
