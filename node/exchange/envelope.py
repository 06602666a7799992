"""Envelope v1: the byte format of an encrypted Arrow share (see protocols/ENVELOPE.md).

A share is a sequence of frames: one header, one or more chunks, one trailer.

* The header is signed by the sender (Ed25519) and carries the HPKE-wrapped
  content key, so only the named recipient can read the chunks.
* Each chunk is one Arrow IPC record-batch message, its buffers optionally
  compressed with zstd in Arrow's own ``BodyCompression`` form (the header
  names the codec), sealed with AES-256-GCM under the content key. The nonce
  is the chunk index (11 bytes, big-endian) followed by a final-chunk flag
  byte, in the manner of the STREAM construction, and the AAD is SHA-256 of
  the header frame. A chunk therefore cannot be moved to another position,
  another share, or be presented as the last one.
* The trailer is signed by the sender and binds the header hash, the row and
  chunk counts, and SHA-256 over the plaintext chunks in order.

Invariants:

* :class:`EnvelopeOpener` hands out a record batch only after its chunk
  authenticated, and in strictly increasing chunk order from 0.
* :class:`EnvelopeOpener.open_trailer` returns only when every chunk up to and
  including the final one arrived and the trailer's signature, counts and
  digest all match; a share is complete only then.
* Every parse failure raises an :class:`~node.errors.EnvelopeError` subclass,
  never a bare ``ValueError`` or ``IndexError``.
* A chunk's message is checked (record batch of the header schema's layout,
  the header's compression, decoded size within
  :data:`~node.exchange.ipc_message.MAX_DECODED_LEN`, field node lengths,
  nested ones included, within
  :data:`~node.exchange.ipc_message.MAX_CHUNK_ELEMENTS`) only after it
  authenticated and before anything is decompressed, so neither a forged nor
  a hostile sender's chunk can make the recipient allocate more than one chunk
  window.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.errors import IdentityError, NodeError
from node.exchange.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReorderError,
    ChunkTagError,
    DuplicateChunkError,
    EnvelopeExpiredError,
    EnvelopeSignatureError,
    ExchangeError,
    MalformedEnvelopeError,
    MissingFinalChunkError,
    TrailerMismatchError,
    UnexpectedSenderError,
    UnknownVersionError,
    WrongRecipientError,
)
from node.exchange.ipc_message import (
    MAX_CHUNK_ELEMENTS,
    MAX_CHUNK_ROWS,
    MAX_DECODED_LEN,
    BatchTemplate,
    RecordBatchMessage,
    message_elements,
    read_batch_layout,
    unsupported_type,
)
from node.identity.keys import HPKE_SUITE, HpkeKeyPair, hpke_public_from_bytes, verify_ed25519

__all__ = [
    "CHUNK_OVERHEAD",
    "COMPRESSIONS",
    "ENCODE_AHEAD",
    "ENCODE_WORKERS",
    "HEADER_SIGNATURE_CONTEXT",
    "HPKE_INFO_PREFIX",
    "MAX_CHUNK_PLAINTEXT",
    "TRAILER_LEN",
    "TRAILER_SIGNATURE_CONTEXT",
    "VERSION",
    "ChunkFrame",
    "EnvelopeOpener",
    "EnvelopeSealer",
    "Header",
    "MessageEncoder",
    "ReplayGuard",
    "SealedChunk",
    "Trailer",
    "chunk_nonce",
    "encode_chunk_frame",
    "encode_within",
    "hpke_info",
    "parse_chunk_frame",
    "parse_header",
    "parse_trailer",
    "split_batch",
]

VERSION = 0x01
SHARE_ID_LEN = 16
CONTENT_KEY_LEN = 32
SIGNATURE_LEN = 64
DIGEST_LEN = 32
TAG_LEN = 16
HPKE_INFO_PREFIX = b"fednode/v1/arrow"
HEADER_SIGNATURE_CONTEXT = b"fednode/v1/arrow/header\x00"
TRAILER_SIGNATURE_CONTEXT = b"fednode/v1/arrow/trailer\x00"
#: A chunk frame is ``index (u64) || final (u8) || ciphertext || tag``.
CHUNK_PREFIX_LEN = 9
CHUNK_OVERHEAD = CHUNK_PREFIX_LEN + TAG_LEN
#: Plaintext bound per chunk: a sealed frame plus protobuf framing stays below
#: gRPC's default 4 MiB message limit.
MAX_CHUNK_PLAINTEXT = 4 * 1024 * 1024 - 16 * 1024
#: Buffer compression by header byte. zstd at level 1 compresses typical tables
#: 3-10x at about 0.5-1 GB/s per core, which costs less than encrypting,
#: hashing, carrying and writing the bytes it saves; the recipient does not
#: decompress at all when it writes Arrow IPC.
COMPRESSIONS = {"none": 0, "zstd": 1}
_COMPRESSION_NAMES = {code: name for name, code in COMPRESSIONS.items()}
_ZSTD_LEVEL = 1
#: Header fields are bounded so a hostile header cannot make the parser allocate much.
MAX_NAME_LEN = 256
MAX_SCHEMA_LEN = 1024 * 1024
TRAILER_LEN = 8 + 8 + DIGEST_LEN + SIGNATURE_LEN
_U64 = struct.Struct(">Q")
_MAX_INDEX = 2**64 - 1


#: Hashing runs beside the cipher: hashlib releases the GIL on large buffers.
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="envelope-hash")
#: Compression is the costliest step of sealing and releases the GIL, so
#: messages are encoded side by side: one worker per core but one (reading,
#: sealing and sending need the rest of a core), at least 2 and at most 8.
#: Sealing stays in order.
ENCODE_WORKERS = max(2, min(8, (os.cpu_count() or 2) - 1))
_ENCODE_POOL = ThreadPoolExecutor(max_workers=ENCODE_WORKERS, thread_name_prefix="envelope-encode")
#: Pieces encoded ahead of sealing: enough to keep every worker busy across
#: batch boundaries. Memory is about this many plain chunk windows (a piece
#: that does not fit once compressed is split, never grown).
ENCODE_AHEAD = 2 * ENCODE_WORKERS
_TYPICAL_RATIO = 4.0


class _OrderedHash:
    """SHA-256 whose updates run on a worker thread, one at a time and in order.

    Hashing chunk ``i`` overlaps sealing or opening chunk ``i + 1``; at most one
    update is in flight, so memory stays bounded.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pending: Future[None] | None = None

    def update(self, data: bytes | memoryview) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = _HASH_POOL.submit(self._hash.update, data)

    def _settle(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def digest(self) -> bytes:
        self._settle()
        return self._hash.digest()

    def hexdigest(self) -> str:
        self._settle()
        return self._hash.hexdigest()


class ReplayGuard(Protocol):
    """Remembers share ids; :meth:`claim` raises ReplayError for one seen before."""

    def claim(self, share_id: bytes) -> None: ...


# --- field encoding -----------------------------------------------------------


def _str16(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_LEN:
        raise ExchangeError(f"{what} must be 1..{MAX_NAME_LEN} bytes of UTF-8, got {len(raw)}")
    return struct.pack(">H", len(raw)) + raw


class _Reader:
    """Bounds-checked cursor over untrusted bytes; every failure is MalformedEnvelopeError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int, field_name: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedEnvelopeError(
                f"{self._what} truncated in {field_name}: needs {n} bytes at offset "
                f"{self._pos}, {len(self._data) - self._pos} left"
            )
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def uint(self, size: int, field_name: str) -> int:
        return int.from_bytes(self.take(size, field_name), "big")

    def text(self, field_name: str) -> str:
        n = self.uint(2, f"{field_name} length")
        if n == 0 or n > MAX_NAME_LEN:
            raise MalformedEnvelopeError(
                f"{self._what} {field_name} length must be 1..{MAX_NAME_LEN}, got {n}"
            )
        raw = self.take(n, field_name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedEnvelopeError(f"{self._what} {field_name} is not UTF-8") from e

    def done(self) -> None:
        if self._pos != len(self._data):
            raise MalformedEnvelopeError(
                f"{self._what} has {len(self._data) - self._pos} trailing bytes"
            )

    @property
    def pos(self) -> int:
        return self._pos


def hpke_info(share_id: bytes, sender: str, recipient: str) -> bytes:
    """HPKE ``info``: the prefix, the share id, then each name with a 2-byte length."""
    return HPKE_INFO_PREFIX + share_id + _str16(sender, "sender") + _str16(recipient, "recipient")


def chunk_nonce(index: int, final: bool) -> bytes:
    """The 12-byte AES-GCM nonce: 11-byte big-endian chunk index, then the final flag."""
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


# --- header -------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The decoded header of a share. ``frame`` holds the exact signed bytes."""

    share_id: bytes
    sender: str
    recipient: str
    agreement: str
    dataset: str
    created: int
    expires: int
    compression: str
    rows_hint: int
    wrapped_key: bytes
    schema_bytes: bytes
    signature: bytes
    frame: bytes = field(repr=False)

    @property
    def body(self) -> bytes:
        return self.frame[:-SIGNATURE_LEN]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole header frame: the AAD of every chunk."""
        return hashlib.sha256(self.frame).digest()

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema the header signs, every field name (nested too) valid UTF-8.

        Raises:
            MalformedEnvelopeError: the bytes are not an Arrow IPC schema, or a
                field name anywhere in it is not UTF-8.
        """
        try:
            schema = pa.ipc.read_schema(pa.py_buffer(self.schema_bytes))
            # pyarrow decodes a name only when it is read: read them all here, so
            # that a bad one fails as a malformed header, not later and elsewhere.
            pending = list(schema)
            while pending:
                field = pending.pop()
                _ = field.name
                kind = field.type
                if isinstance(kind, pa.ExtensionType):
                    kind = kind.storage_type
                if pa.types.is_dictionary(kind):
                    kind = kind.value_type
                pending += [kind.field(i) for i in range(kind.num_fields)]
        except UnicodeDecodeError as e:
            raise MalformedEnvelopeError(
                f"header schema has a field name that is not UTF-8: {e}"
            ) from e
        except (pa.ArrowException, ValueError, OSError) as e:
            raise MalformedEnvelopeError(f"header schema is not an Arrow IPC schema: {e}") from e
        return schema


def _header_body(
    *,
    share_id: bytes,
    sender: str,
    recipient: str,
    agreement: str,
    dataset: str,
    created: int,
    expires: int,
    compression: str,
    rows_hint: int,
    wrapped_key: bytes,
    schema_bytes: bytes,
) -> bytes:
    if len(share_id) != SHARE_ID_LEN:
        raise ExchangeError(f"share_id must be {SHARE_ID_LEN} bytes, got {len(share_id)}")
    if len(schema_bytes) > MAX_SCHEMA_LEN:
        raise ExchangeError(f"schema is {len(schema_bytes)} bytes, limit {MAX_SCHEMA_LEN}")
    return b"".join(
        [
            bytes([VERSION]),
            share_id,
            _str16(sender, "sender"),
            _str16(recipient, "recipient"),
            _str16(agreement, "agreement"),
            _str16(dataset, "dataset"),
            _U64.pack(created),
            _U64.pack(expires),
            bytes([COMPRESSIONS[compression]]),
            _U64.pack(rows_hint),
            struct.pack(">H", len(wrapped_key)),
            wrapped_key,
            struct.pack(">I", len(schema_bytes)),
            schema_bytes,
        ]
    )


def parse_header(frame: bytes) -> Header:
    """Parse a header frame without verifying it.

    Raises:
        UnknownVersionError: the first byte is not 0x01.
        MalformedEnvelopeError: a length or field does not parse.
    """
    frame = bytes(frame)
    if not frame:
        raise MalformedEnvelopeError("header frame is empty")
    if frame[0] != VERSION:
        raise UnknownVersionError(
            f"envelope version 0x{frame[0]:02x} is not supported (expected 0x{VERSION:02x})"
        )
    r = _Reader(frame, "header")
    r.take(1, "version")
    share_id = r.take(SHARE_ID_LEN, "share_id")
    sender = r.text("sender")
    recipient = r.text("recipient")
    agreement = r.text("agreement")
    dataset = r.text("dataset")
    created = r.uint(8, "created")
    expires = r.uint(8, "expires")
    code = r.uint(1, "compression")
    compression = _COMPRESSION_NAMES.get(code)
    if compression is None:
        raise MalformedEnvelopeError(f"header names unknown compression 0x{code:02x}")
    rows_hint = r.uint(8, "rows hint")
    wrapped_key = r.take(r.uint(2, "wrapped key length"), "wrapped key")
    schema_len = r.uint(4, "schema length")
    if schema_len > MAX_SCHEMA_LEN:
        raise MalformedEnvelopeError(f"header schema length {schema_len} exceeds {MAX_SCHEMA_LEN}")
    schema_bytes = r.take(schema_len, "schema")
    signature = r.take(SIGNATURE_LEN, "signature")
    r.done()
    return Header(
        share_id=share_id,
        sender=sender,
        recipient=recipient,
        agreement=agreement,
        dataset=dataset,
        created=created,
        expires=expires,
        compression=compression,
        rows_hint=rows_hint,
        wrapped_key=wrapped_key,
        schema_bytes=schema_bytes,
        signature=signature,
        frame=frame,
    )


# --- chunks -------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkFrame:
    index: int
    final: bool
    sealed: memoryview


def encode_chunk_frame(index: int, final: bool, sealed: bytes) -> bytes:
    return b"".join([_U64.pack(index), b"\x01" if final else b"\x00", sealed])


def parse_chunk_frame(frame: bytes) -> ChunkFrame:
    """Split a chunk frame into index, final flag and sealed bytes (not yet authenticated).

    Raises:
        MalformedEnvelopeError: too short, or the flag byte is neither 0 nor 1.
    """
    if len(frame) < CHUNK_OVERHEAD:
        raise MalformedEnvelopeError(
            f"chunk frame is {len(frame)} bytes, shorter than the {CHUNK_OVERHEAD}-byte minimum"
        )
    flag = frame[8]
    if flag not in (0, 1):
        raise MalformedEnvelopeError(f"chunk final flag must be 0 or 1, got {flag}")
    view = memoryview(frame)
    return ChunkFrame(_U64.unpack_from(frame, 0)[0], flag == 1, view[CHUNK_PREFIX_LEN:])


class MessageEncoder:
    """Encode record batches as encapsulated Arrow IPC messages, zstd buffers or plain."""

    def __init__(self, compression: str) -> None:
        codec = pa.Codec("zstd", compression_level=_ZSTD_LEVEL) if compression == "zstd" else None
        # Messages of one batch are already encoded in parallel; threads per
        # message would only contend for the same cores.
        self._options = pa.ipc.IpcWriteOptions(compression=codec, use_threads=False)
        self.compressed = codec is not None

    def __call__(self, batch: pa.RecordBatch) -> pa.Buffer:
        if not self.compressed:
            return batch.serialize()
        # pyarrow compresses buffers only inside its stream writer: write a
        # one-batch stream and keep the record-batch message between the
        # schema message (no body) and the 8-byte end-of-stream marker.
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema, options=self._options) as writer:
            writer.write_batch(batch)
        stream = sink.getvalue()
        skip = 8 + int.from_bytes(stream[4:8].to_pybytes(), "little")
        return stream.slice(skip, stream.size - skip - 8)


def split_batch(
    batch: pa.RecordBatch, limit: int = MAX_CHUNK_PLAINTEXT
) -> Iterator[pa.RecordBatch]:
    """Slice ``batch`` into pieces whose plain IPC message is at most ``limit`` bytes
    and which hold at most :data:`~node.exchange.ipc_message.MAX_CHUNK_ROWS` rows.

    The plain size bounds what a chunk decodes to, compressed or not.

    Raises:
        ExchangeError: a single row serialises to more than ``limit`` bytes.
    """
    if batch.num_rows > MAX_CHUNK_ROWS:
        for start in range(0, batch.num_rows, MAX_CHUNK_ROWS):
            yield from split_batch(batch.slice(start, MAX_CHUNK_ROWS), limit)
        return
    size = pa.ipc.get_record_batch_size(batch)
    if size <= limit:
        yield batch
        return
    if batch.num_rows <= 1:
        raise ExchangeError(f"one row serialises to {size} bytes, above {limit}")
    # Slicing by estimated size first avoids measuring many halves; the
    # recursion then handles uneven rows, padding and metadata.
    pieces = max(2, -(-size // (limit * 7 // 8)))
    step = -(-batch.num_rows // pieces)
    for start in range(0, batch.num_rows, step):
        yield from split_batch(batch.slice(start, step), limit)


def _encode_piece(
    piece: pa.RecordBatch, encode: Callable[[pa.RecordBatch], pa.Buffer], limit: int
) -> tuple[list[pa.Buffer], int]:
    """``encode_within`` and the piece's plain size, from which the sealer learns the ratio."""
    return encode_within(piece, encode, limit), pa.ipc.get_record_batch_size(piece)


def encode_within(
    piece: pa.RecordBatch, encode: Callable[[pa.RecordBatch], pa.Buffer], limit: int
) -> list[pa.Buffer]:
    """``encode(piece)``, split until every message is at most ``limit`` bytes and
    holds at most :data:`~node.exchange.ipc_message.MAX_CHUNK_ELEMENTS` elements.

    Incompressible buffers grow by a few bytes under compression, so a piece
    that fits plain can overflow encoded; a piece of narrow elements (booleans,
    nulls, nested lists) can hold more elements than the recipient accepts in
    one chunk while its bytes fit easily.

    Raises:
        ExchangeError: a single row encodes to more than ``limit`` bytes or
            more than the element bound.
    """
    message = encode(piece)
    elements = message_elements(message)
    if message.size <= limit and elements <= MAX_CHUNK_ELEMENTS:
        return [message]
    if piece.num_rows <= 1:
        raise ExchangeError(
            f"one row encodes to {message.size} bytes and {elements} elements, above "
            f"{limit} bytes or {MAX_CHUNK_ELEMENTS} elements"
        )
    # Elements spread evenly over rows in practice, so one split usually suffices;
    # bytes only just over the limit are halved.
    pieces = max(2, -(-elements // (MAX_CHUNK_ELEMENTS * 7 // 8)))
    step = -(-piece.num_rows // min(pieces, piece.num_rows))
    out: list[pa.Buffer] = []
    for start in range(0, piece.num_rows, step):
        out += encode_within(piece.slice(start, step), encode, limit)
    return out


@dataclass(frozen=True)
class SealedChunk:
    """A sealed chunk before framing: its frame is ``u64(index) || u8(final) || sealed``."""

    index: int
    final: bool
    sealed: bytes

    @property
    def prefix(self) -> bytes:
        return _U64.pack(self.index) + (b"\x01" if self.final else b"\x00")

    @property
    def frame(self) -> bytes:
        return self.prefix + self.sealed


# --- trailer ------------------------------------------------------------------


@dataclass(frozen=True)
class Trailer:
    rows: int
    chunks: int
    digest: bytes
    signature: bytes

    @property
    def digest_text(self) -> str:
        return "sha256:" + self.digest.hex()


def _trailer_message(header_digest: bytes, rows: int, chunks: int, digest: bytes) -> bytes:
    return TRAILER_SIGNATURE_CONTEXT + header_digest + _U64.pack(rows) + _U64.pack(chunks) + digest


def parse_trailer(frame: bytes) -> Trailer:
    """Parse a trailer frame without verifying it.

    Raises:
        MalformedEnvelopeError: the frame is not exactly 112 bytes.
    """
    if len(frame) != TRAILER_LEN:
        raise MalformedEnvelopeError(f"trailer must be {TRAILER_LEN} bytes, got {len(frame)}")
    rows, chunks = struct.unpack_from(">QQ", frame, 0)
    return Trailer(rows, chunks, bytes(frame[16:48]), bytes(frame[48:]))


# --- sealing ------------------------------------------------------------------


class EnvelopeSealer:
    """Seal a stream of record batches to one recipient.

    Use: read :attr:`header`, send every frame from :meth:`add` for each batch,
    then the two frames from :meth:`finish` (final chunk, trailer). The sealer
    holds back one message so that the last one can carry the final flag.
    """

    def __init__(
        self,
        *,
        signing_key: ed25519.Ed25519PrivateKey,
        sender: str,
        recipient: str,
        recipient_hpke_public: bytes,
        agreement: str,
        dataset: str,
        schema: pa.Schema,
        ttl_seconds: int = 3600,
        now: int | None = None,
        share_id: bytes | None = None,
        content_key: bytes | None = None,
        wrapped_key: bytes | None = None,
        chunk_limit: int = MAX_CHUNK_PLAINTEXT,
        compression: str = "zstd",
        rows_hint: int = 0,
    ) -> None:
        """Build the header.

        ``rows_hint`` is the number of rows the sender expects to send (0 if
        unknown). It only lets the recipient show progress; the signed
        trailer's row count is what the share is checked against.

        ``share_id``, ``content_key`` and ``wrapped_key`` are drawn fresh when
        omitted; fixing them is for test vectors only, since HPKE encapsulation
        is randomised.

        Raises:
            ExchangeError: a name is empty or too long, the compression is
                unknown, or the schema holds a type chunks cannot carry (see
                :func:`~node.exchange.ipc_message.unsupported_type`).
            IdentityError: the recipient's HPKE public key is malformed.
        """
        if compression not in COMPRESSIONS:
            raise ExchangeError(
                f"unknown compression {compression!r}",
                hint="use " + " or ".join(COMPRESSIONS),
            )
        if not 0 < chunk_limit <= MAX_CHUNK_PLAINTEXT:
            raise ExchangeError(f"chunk limit {chunk_limit} is out of range")
        unsupported = unsupported_type(schema)
        if unsupported is not None:
            raise ExchangeError(f"a share cannot carry this schema: {unsupported}")
        self.share_id = share_id if share_id is not None else os.urandom(SHARE_ID_LEN)
        self._key = content_key if content_key is not None else AESGCM.generate_key(256)
        if wrapped_key is None:
            wrapped_key = HPKE_SUITE.encrypt(
                self._key,
                hpke_public_from_bytes(recipient_hpke_public),
                info=hpke_info(self.share_id, sender, recipient),
            )
        created = int(time.time()) if now is None else now
        body = _header_body(
            share_id=self.share_id,
            sender=sender,
            recipient=recipient,
            agreement=agreement,
            dataset=dataset,
            created=created,
            expires=created + ttl_seconds,
            compression=compression,
            rows_hint=rows_hint,
            wrapped_key=wrapped_key,
            schema_bytes=schema.serialize().to_pybytes(),
        )
        self._signing_key = signing_key
        self.header: bytes = body + signing_key.sign(HEADER_SIGNATURE_CONTEXT + body)
        self.schema = schema
        self._aad = hashlib.sha256(self.header).digest()
        self._aead = AESGCM(self._key)
        self._hash = _OrderedHash()
        self.compression = compression
        self._encode = MessageEncoder(compression)
        self._limit = chunk_limit
        self._pending: pa.Buffer | None = None
        self._encoding: deque[Future[tuple[list[pa.Buffer], int]]] = deque()
        # Plain bytes per encoded byte so far, to size compressed pieces so that
        # each fills about one chunk; starts at a typical table's ratio.
        self._ratio = _TYPICAL_RATIO
        self._pending_rows = 0
        self._index = 0
        self.rows = 0
        self.finished = False

    def _seal(self, plaintext: pa.Buffer, final: bool) -> SealedChunk:
        if self._index >= _MAX_INDEX:
            raise ExchangeError("share exceeds 2**64 - 1 chunks")
        # pyarrow exports signed bytes, which the cipher refuses; the view is unsigned, no copy.
        view = memoryview(plaintext).cast("B")
        self._hash.update(view)
        sealed = self._aead.encrypt(chunk_nonce(self._index, final), view, self._aad)
        chunk = SealedChunk(self._index, final, sealed)
        self._index += 1
        return chunk

    def add(self, batch: pa.RecordBatch) -> Iterator[bytes]:
        """Seal ``batch`` (split to the chunk limit); yields its chunk frames, all but the
        last message, which is held back in case it is the final one.

        Raises:
            ExchangeError: as :meth:`add_sealed`.
        """
        for chunk in self.add_sealed(batch):
            yield chunk.frame
        for chunk in self.flush_sealed():
            yield chunk.frame

    def finish(self) -> tuple[bytes, bytes]:
        """Seal the final chunk and sign the trailer; returns ``(final_chunk, trailer)``.

        Raises:
            ExchangeError: the sealer is already finished.
        """
        chunks, trailer = self.finish_sealed()
        if len(chunks) != 1:
            raise ExchangeError("finish() follows add_sealed(); use finish_sealed() with it")
        return chunks[0].frame, trailer

    def add_sealed(self, batch: pa.RecordBatch) -> Iterator[SealedChunk]:
        """Start sealing ``batch`` (split to the chunk limit); yields the sealed chunks that
        are ready, in order, not yet framed.

        Encoding runs on worker threads, up to :data:`ENCODE_AHEAD` messages
        ahead, across batch boundaries, so both cores stay busy; the chunks of
        a batch may therefore come out of a later call, or of
        :meth:`flush_sealed` and :meth:`finish_sealed`. A transport may frame
        them itself (see :attr:`SealedChunk.frame`) to save a copy of every chunk.

        Raises:
            ExchangeError: the batch's schema differs from the header's, the
                sealer is already finished, or one row exceeds the chunk limit.
        """
        if self.finished:
            raise ExchangeError("sealer is finished")
        if not batch.schema.equals(self.schema):
            raise ExchangeError(f"batch schema {batch.schema} differs from header schema")
        encode, limit = self._encode, self._limit
        for piece in split_batch(batch, self._piece_limit()):
            self._encoding.append(_ENCODE_POOL.submit(_encode_piece, piece, encode, limit))
            if len(self._encoding) > ENCODE_AHEAD:
                yield from self._seal_encoded(1)
        self.rows += batch.num_rows

    def flush_sealed(self) -> Iterator[SealedChunk]:
        """Seal everything still being encoded, except the message held back as the last."""
        yield from self._seal_encoded(len(self._encoding))

    def _piece_limit(self) -> int:
        """Plain bytes per piece: one chunk uncompressed; compressed, what should
        fill about four fifths of a chunk at the ratio seen so far, within the
        decoded bound."""
        if not self._encode.compressed:
            return self._limit
        return int(min(MAX_DECODED_LEN, max(self._limit, self._limit * self._ratio * 0.8)))

    def _seal_encoded(self, count: int) -> Iterator[SealedChunk]:
        for _ in range(count):
            messages, plain = self._encoding.popleft().result()
            self._ratio = plain / max(1, sum(m.size for m in messages))
            for message in messages:
                if self._pending is not None:
                    yield self._seal(self._pending, final=False)
                self._pending = message

    def finish_sealed(self) -> tuple[list[SealedChunk], bytes]:
        """Seal what is left, the last chunk flagged final, and sign the trailer.

        Returns ``(chunks, trailer)``; ``chunks`` ends with the final chunk.

        Raises:
            ExchangeError: the sealer is already finished.
        """
        if self.finished:
            raise ExchangeError("sealer is finished")
        chunks = list(self.flush_sealed())
        self.finished = True
        # A share always has a final chunk, even for an empty table, so that
        # truncation before the end is always detectable.
        last = self._pending
        if last is None:
            last = self._encode(pa.RecordBatch.from_pylist([], schema=self.schema))
        chunks.append(self._seal(last, final=True))
        self._pending = None
        digest = self._hash.digest()
        message = _trailer_message(self._aad, self.rows, self._index, digest)
        trailer = (
            _U64.pack(self.rows) + _U64.pack(self._index) + digest + self._signing_key.sign(message)
        )
        return chunks, trailer

    @property
    def chunks(self) -> int:
        return self._index

    @property
    def digest_text(self) -> str:
        return "sha256:" + self._hash.hexdigest()


# --- opening ------------------------------------------------------------------


class EnvelopeOpener:
    """Verify and decrypt one share, frame by frame.

    Call :meth:`open_header` once, :meth:`open_chunk` for each chunk frame,
    then :meth:`open_trailer`. If the transport ends early, call
    :meth:`end_of_stream`, which raises the precise reason.
    """

    def __init__(
        self,
        *,
        recipient: str,
        hpke: HpkeKeyPair,
        sender_key: Callable[[str], bytes],
        expected_sender: str | None = None,
        expected_agreement: str | None = None,
        replay: ReplayGuard | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """Prepare to open a share addressed to ``recipient``.

        ``sender_key`` maps a department to its raw Ed25519 public key (from
        the federation directory) and raises a NodeError for an unknown one.
        """
        self._recipient = recipient
        self._hpke = hpke
        self._sender_key = sender_key
        self._expected_sender = expected_sender
        self._expected_agreement = expected_agreement
        self._replay = replay
        self._now = now
        self.header: Header | None = None
        self._schema: pa.Schema | None = None
        self._aead: AESGCM | None = None
        self._aad = b""
        self._template: BatchTemplate | None = None
        self._hash = _OrderedHash()
        self._next = 0
        self._final_seen = False
        # One out-of-order chunk is held to tell a gap from a reordering.
        self._early: int | None = None
        self.rows = 0
        self.trailer: Trailer | None = None

    # header

    def open_header(self, frame: bytes) -> Header:
        """Parse and verify the header, claim its share_id, and unwrap the content key.

        Raises:
            UnknownVersionError, MalformedEnvelopeError: the bytes do not parse.
            UnexpectedSenderError: the sender is not the expected department.
            EnvelopeSignatureError: the header signature does not verify.
            WrongRecipientError: addressed elsewhere, or wrapped to another key.
            EnvelopeExpiredError: the header's expiry has passed.
            ReplayError: the share_id was seen before.
        """
        if self.header is not None:
            raise MalformedEnvelopeError("a second header arrived in one share")
        header = parse_header(frame)
        if self._expected_sender is not None and header.sender != self._expected_sender:
            raise UnexpectedSenderError(
                f"envelope is from {header.sender!r}, expected {self._expected_sender!r}"
            )
        try:
            public = self._sender_key(header.sender)
        except NodeError as e:
            raise UnexpectedSenderError(f"sender {header.sender!r} is not a known peer: {e}") from e
        try:
            verify_ed25519(
                public,
                header.signature,
                HEADER_SIGNATURE_CONTEXT + header.body,
                what=f"envelope header from {header.sender}",
            )
        except IdentityError as e:
            raise EnvelopeSignatureError(
                f"header signature does not verify under {header.sender}'s Ed25519 key"
            ) from e
        if header.recipient != self._recipient:
            raise WrongRecipientError(
                f"envelope is addressed to {header.recipient!r}, this node is {self._recipient!r}"
            )
        now = int(self._now())
        if header.expires <= now:
            raise EnvelopeExpiredError(
                f"envelope expired at {header.expires}, now {now} ({now - header.expires}s ago)"
            )
        if self._expected_agreement is not None and header.agreement != self._expected_agreement:
            raise MalformedEnvelopeError(
                f"envelope is for agreement {header.agreement!r}, "
                f"expected {self._expected_agreement!r}"
            )
        schema = header.schema
        # Before the share id is claimed: a schema no chunk could match fails here.
        template = BatchTemplate.of(schema)
        try:
            key = HPKE_SUITE.decrypt(
                header.wrapped_key,
                self._hpke.private,
                info=hpke_info(header.share_id, header.sender, header.recipient),
            )
        except (InvalidTag, ValueError) as e:
            raise WrongRecipientError(
                "content key does not unwrap with this node's HPKE key "
                "(sealed to another key, or the wrapped key was altered)"
            ) from e
        if len(key) != CONTENT_KEY_LEN:
            raise MalformedEnvelopeError(f"content key is {len(key)} bytes, expected 32")
        if self._replay is not None:
            self._replay.claim(header.share_id)
        self.header = header
        self._schema = schema
        self._aad = header.digest
        self._aead = AESGCM(key)
        self._template = template
        return header

    # chunks

    def _decrypt(self, chunk: ChunkFrame) -> bytes:
        assert self._aead is not None
        try:
            nonce = chunk_nonce(chunk.index, chunk.final)
            return self._aead.decrypt(nonce, chunk.sealed, self._aad)
        except InvalidTag as e:
            raise ChunkTagError(
                f"chunk {chunk.index} failed authentication (AES-GCM tag mismatch): "
                "altered in transit, or not sealed for this header and position"
            ) from e

    def open_chunk(self, frame: bytes) -> RecordBatchMessage | None:
        """Authenticate one chunk frame and check the record-batch message inside.

        Returns the checked message (decoded only on demand), or ``None``
        when the chunk arrived early and is held to classify the failure on
        the next frame.

        Raises:
            MalformedEnvelopeError: no header yet, or the frame or IPC message is malformed.
            ChunkTagError: the chunk does not authenticate at its claimed position.
            DuplicateChunkError, ChunkReorderError, ChunkGapError: out of sequence.
            ChunkAfterFinalError: a chunk follows the final chunk.
        """
        if self._aead is None or self._schema is None:
            raise MalformedEnvelopeError("chunk arrived before the header")
        chunk = parse_chunk_frame(frame)
        if self._final_seen:
            self._decrypt(chunk)
            raise ChunkAfterFinalError(
                f"chunk {chunk.index} arrived after final chunk {self._next - 1}"
            )
        if self._early is not None:
            if chunk.index == self._next:
                self._decrypt(chunk)
                raise ChunkReorderError(
                    f"chunks out of order: chunk {self._early} arrived before chunk {self._next}"
                )
            self._raise_gap(after=f"then chunk {chunk.index}")
        if chunk.index < self._next:
            self._decrypt(chunk)
            raise DuplicateChunkError(
                f"chunk {chunk.index} arrived twice (expected chunk {self._next})"
            )
        if chunk.index > self._next:
            self._decrypt(chunk)
            self._early = chunk.index
            return None
        plaintext = self._decrypt(chunk)
        self._hash.update(plaintext)
        self._next += 1
        self._final_seen = chunk.final
        assert self.header is not None
        assert self._template is not None
        layout = read_batch_layout(
            plaintext,
            self._template,
            allow_zstd=self.header.compression == "zstd",
            what=f"chunk {chunk.index}",
        )
        self.rows += layout.rows
        return RecordBatchMessage(plaintext, layout, self._schema, chunk.index)

    def _raise_gap(self, after: str) -> None:
        raise ChunkGapError(
            f"chunk {self._next} is missing: chunk {self._early} arrived in its place, {after}"
        )

    # trailer

    def open_trailer(self, frame: bytes) -> Trailer:
        """Verify the trailer against everything received.

        Raises:
            MalformedEnvelopeError: no header yet, or the trailer is malformed.
            ChunkGapError: a held early chunk never had its predecessor arrive.
            MissingFinalChunkError: the final chunk never arrived.
            EnvelopeSignatureError: the trailer signature does not verify.
            TrailerMismatchError: row count, chunk count or digest differ.
        """
        header = self.header
        if header is None:
            raise MalformedEnvelopeError("trailer arrived before the header")
        if self.trailer is not None:
            raise MalformedEnvelopeError("a second trailer arrived in one share")
        if self._early is not None:
            self._raise_gap(after="then the trailer")
        if not self._final_seen:
            raise MissingFinalChunkError(
                f"trailer arrived after chunk {self._next - 1} without the final chunk"
                if self._next
                else "trailer arrived before any chunk"
            )
        trailer = parse_trailer(frame)
        try:
            verify_ed25519(
                self._sender_key(header.sender),
                trailer.signature,
                _trailer_message(self._aad, trailer.rows, trailer.chunks, trailer.digest),
                what=f"envelope trailer from {header.sender}",
            )
        except IdentityError as e:
            raise EnvelopeSignatureError(
                f"trailer signature does not verify under {header.sender}'s Ed25519 key"
            ) from e
        digest = self._hash.digest()
        if trailer.chunks != self._next:
            raise TrailerMismatchError(
                f"trailer says {trailer.chunks} chunks, {self._next} arrived"
            )
        if trailer.rows != self.rows:
            raise TrailerMismatchError(f"trailer says {trailer.rows} rows, {self.rows} arrived")
        if trailer.digest != digest:
            raise TrailerMismatchError(
                f"trailer digest sha256:{trailer.digest.hex()} differs from the "
                f"received chunks' sha256:{digest.hex()}"
            )
        self.trailer = trailer
        return trailer

    def end_of_stream(self) -> None:
        """Call when the transport ends; raises unless the trailer verified.

        Raises:
            MalformedEnvelopeError: the stream ended before the header.
            ChunkGapError: a held early chunk never had its predecessor arrive.
            MissingFinalChunkError: the stream ended before the final chunk or trailer.
        """
        if self.trailer is not None:
            return
        if self.header is None:
            raise MissingFinalChunkError("stream ended before the header")
        if self._early is not None:
            self._raise_gap(after="then the stream ended")
        if not self._final_seen:
            raise MissingFinalChunkError(
                f"stream ended after {self._next} chunks without the final chunk (truncated)"
            )
        raise MissingFinalChunkError("stream ended after the final chunk without the trailer")

    @property
    def chunks(self) -> int:
        return self._next

    @property
    def digest_text(self) -> str:
        return "sha256:" + self._hash.hexdigest()
