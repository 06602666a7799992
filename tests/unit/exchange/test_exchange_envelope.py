"""Envelope v1: round trips, every refusal, bit flips, parser fuzzing, committed vectors."""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import EnvelopeError, ExchangeError, UnknownPeerError
from node.exchange import envelope as env
from node.exchange import ipc_message
from node.exchange.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReorderError,
    ChunkTagError,
    DuplicateChunkError,
    EnvelopeExpiredError,
    EnvelopeSignatureError,
    MalformedEnvelopeError,
    MissingFinalChunkError,
    ReplayError,
    TrailerMismatchError,
    UnexpectedSenderError,
    UnknownVersionError,
    WrongRecipientError,
)
from node.exchange.store import ExchangeStore
from node.identity.keys import (
    HPKE_SUITE,
    ed25519_public_raw,
    generate_hpke,
    hpke_from_seed,
    hpke_public_from_bytes,
)
from tests.unit.exchange import envelope_vectors as vectors

SENDER = ed25519.Ed25519PrivateKey.from_private_bytes(vectors.SENDER_SEED)
RECIPIENT = hpke_from_seed(vectors.RECIPIENT_HPKE_SEED)
OTHER = hpke_from_seed(vectors.OTHER_HPKE_SEED)
NOW = 1_700_000_000


def sender_keys(dept: str) -> bytes:
    if dept != "health":
        raise UnknownPeerError(f"{dept} is not in the directory")
    return ed25519_public_raw(SENDER)


def make_sealer(schema: pa.Schema, **overrides: Any) -> env.EnvelopeSealer:
    """A sealer from health to statistics at NOW; ``overrides`` replace any argument."""
    args: dict[str, Any] = {
        "signing_key": SENDER,
        "sender": "health",
        "recipient": "statistics",
        "recipient_hpke_public": RECIPIENT.public_bytes,
        "agreement": "agr-1",
        "dataset": "visits",
        "schema": schema,
        "now": NOW,
    }
    args.update(overrides)
    return env.EnvelopeSealer(**args)


def seal(
    data: pa.Table,
    *,
    limit: int = 4096,
    recipient: str = "statistics",
    hpke_public: bytes | None = None,
    key: ed25519.Ed25519PrivateKey = SENDER,
    ttl: int = 3600,
    compression: str = "zstd",
    batch_rows: int = 50,
) -> tuple[bytes, list[bytes], bytes]:
    sealer = make_sealer(
        data.schema,
        signing_key=key,
        recipient=recipient,
        recipient_hpke_public=hpke_public or RECIPIENT.public_bytes,
        ttl_seconds=ttl,
        chunk_limit=limit,
        compression=compression,
    )
    chunks = [f for b in data.to_batches(max_chunksize=batch_rows) for f in sealer.add(b)]
    final, trailer = sealer.finish()
    return sealer.header, [*chunks, final], trailer


def opener(**kwargs: object) -> env.EnvelopeOpener:
    args: dict[str, object] = {
        "recipient": "statistics",
        "hpke": RECIPIENT,
        "sender_key": sender_keys,
        "now": lambda: NOW + 10,
    }
    args.update(kwargs)
    return env.EnvelopeOpener(**args)  # type: ignore[arg-type]


def open_all(
    header: bytes, chunks: list[bytes], trailer: bytes | None, o: env.EnvelopeOpener | None = None
) -> pa.Table:
    o = o or opener()
    o.open_header(header)
    batches = [m.decode() for c in chunks if (m := o.open_chunk(c)) is not None]
    if trailer is None:
        o.end_of_stream()
    else:
        o.open_trailer(trailer)
    return pa.Table.from_batches(batches, schema=o.header.schema if o.header else None)


TABLE = vectors.table(300)


def test_round_trip_many_chunks() -> None:
    header, chunks, trailer = seal(TABLE)
    assert len(chunks) > 3
    assert all(len(c) <= 4096 + env.CHUNK_OVERHEAD for c in chunks)
    assert open_all(header, chunks, trailer).equals(TABLE)


def test_round_trip_empty_table_still_has_a_final_chunk() -> None:
    header, chunks, trailer = seal(vectors.table(0))
    assert len(chunks) == 1
    assert open_all(header, chunks, trailer).num_rows == 0


def test_split_batch_respects_limit_and_keeps_rows() -> None:
    batch = pa.record_batch({"s": ["x" * 100] * 1000})
    pieces = list(env.split_batch(batch, 8192))
    assert len(pieces) > 10
    assert all(p.serialize().size <= 8192 for p in pieces)
    assert pa.Table.from_batches(pieces).equals(pa.Table.from_batches([batch]))


def test_split_batch_refuses_a_row_larger_than_the_limit() -> None:
    with pytest.raises(ExchangeError, match="one row serialises"):
        list(env.split_batch(pa.record_batch({"s": ["x" * 10_000]}), 4096))


def test_sealer_refuses_dictionary_columns() -> None:
    schema = pa.schema([("d", pa.dictionary(pa.int32(), pa.string()))])
    with pytest.raises(ExchangeError, match="holds a dictionary type"):
        make_sealer(schema)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _forged_trailer(header: bytes, rows: int, chunks: int, digest: bytes) -> bytes:
    message = env._trailer_message(
        __import__("hashlib").sha256(header).digest(), rows, chunks, digest
    )
    return struct.pack(">QQ", rows, chunks) + digest + SENDER.sign(message)


Case = Callable[[bytes, list[bytes], bytes], tuple[bytes, list[bytes], bytes | None]]

NEGATIVE: list[tuple[str, Case, type[EnvelopeError], str]] = [
    (
        "tampered chunk ciphertext",
        lambda h, c, t: (h, [c[0], _flip(c[1], 40), *c[2:]], t),
        ChunkTagError,
        r"chunk 1 failed authentication",
    ),
    (
        "tampered chunk tag",
        lambda h, c, t: (h, [*c[:-1], _flip(c[-1], len(c[-1]) - 1)], t),
        ChunkTagError,
        r"tag mismatch",
    ),
    (
        "index field rewritten",
        lambda h, c, t: (h, [c[0], c[1][:7] + b"\x05" + c[1][8:], *c[2:]], t),
        ChunkTagError,
        r"chunk 5 failed authentication",
    ),
    (
        "final flag set on a middle chunk",
        lambda h, c, t: (h, [c[0], c[1][:8] + b"\x01" + c[1][9:], *c[2:]], t),
        ChunkTagError,
        r"chunk 1 failed",
    ),
    (
        "missing middle chunk",
        lambda h, c, t: (h, [c[0], *c[2:]], t),
        ChunkGapError,
        r"chunk 1 is missing: chunk 2 arrived in its place",
    ),
    (
        "reordered chunks",
        lambda h, c, t: (h, [c[0], c[2], c[1], *c[3:]], t),
        ChunkReorderError,
        r"chunk 2 arrived before chunk 1",
    ),
    (
        "duplicated chunk",
        lambda h, c, t: (h, [c[0], c[1], c[1], *c[2:]], t),
        DuplicateChunkError,
        r"chunk 1 arrived twice",
    ),
    (
        "truncated stream",
        lambda h, c, t: (h, c[:2], None),
        MissingFinalChunkError,
        r"stream ended after 2 chunks without the final chunk",
    ),
    (
        "final chunk dropped before trailer",
        lambda h, c, t: (h, c[:-1], t),
        MissingFinalChunkError,
        r"without the final chunk",
    ),
    (
        "trailer dropped",
        lambda h, c, t: (h, c, None),
        MissingFinalChunkError,
        r"without the trailer",
    ),
    (
        "chunk after final",
        lambda h, c, t: (h, [*c, c[0]], t),
        ChunkAfterFinalError,
        r"arrived after final chunk",
    ),
    (
        "gap at the end",
        lambda h, c, t: (h, [*c[:-2], c[-1]], t),
        ChunkGapError,
        r"then the trailer",
    ),
    (
        "header signature broken",
        lambda h, c, t: (_flip(h, len(h) - 3), c, t),
        EnvelopeSignatureError,
        r"header signature does not verify",
    ),
    (
        "header body altered",
        lambda h, c, t: (_flip(h, 5), c, t),
        EnvelopeSignatureError,
        r"header signature",
    ),
    (
        "unknown version",
        lambda h, c, t: (b"\x02" + h[1:], c, t),
        UnknownVersionError,
        r"version 0x02 is not supported",
    ),
    (
        "trailer signature broken",
        lambda h, c, t: (h, c, _flip(t, len(t) - 1)),
        EnvelopeSignatureError,
        r"trailer signature",
    ),
    (
        "trailer rows wrong (validly signed)",
        lambda h, c, t: (h, c, _forged_trailer(h, 299, len(c), t[16:48])),
        TrailerMismatchError,
        r"trailer says 299 rows, 300 arrived",
    ),
    (
        "trailer digest wrong (validly signed)",
        lambda h, c, t: (h, c, _forged_trailer(h, 300, len(c), b"\x00" * 32)),
        TrailerMismatchError,
        r"trailer digest sha256:0000",
    ),
    (
        "trailer chunk count wrong (validly signed)",
        lambda h, c, t: (h, c, _forged_trailer(h, 300, len(c) + 1, t[16:48])),
        TrailerMismatchError,
        r"chunks, \d+ arrived",
    ),
    (
        "trailer truncated",
        lambda h, c, t: (h, c, t[:-1]),
        MalformedEnvelopeError,
        r"trailer must be 112 bytes, got 111",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [pytest.param(m, e, r, id=name) for name, m, e, r in NEGATIVE],
)
def test_opener_refuses(mutate: Case, error: type[EnvelopeError], match: str) -> None:
    header, chunks, trailer = seal(TABLE)
    assert len(chunks) >= 4
    h, c, t = mutate(header, chunks, trailer)
    with pytest.raises(error, match=match):
        open_all(h, c, t)


def test_wrong_recipient_name() -> None:
    header, chunks, trailer = seal(TABLE, recipient="justice")
    with pytest.raises(WrongRecipientError, match="addressed to 'justice'"):
        open_all(header, chunks, trailer)


def test_wrong_recipient_key() -> None:
    header, chunks, trailer = seal(TABLE, hpke_public=OTHER.public_bytes)
    with pytest.raises(WrongRecipientError, match="does not unwrap with this node's HPKE key"):
        open_all(header, chunks, trailer)


def test_signed_by_another_key() -> None:
    header, chunks, trailer = seal(TABLE, key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(EnvelopeSignatureError, match="under health's Ed25519 key"):
        open_all(header, chunks, trailer)


def test_unexpected_sender() -> None:
    header, chunks, trailer = seal(TABLE)
    with pytest.raises(UnexpectedSenderError, match="from 'health', expected 'justice'"):
        open_all(header, chunks, trailer, opener(expected_sender="justice"))


def test_unexpected_agreement() -> None:
    header, chunks, trailer = seal(TABLE)
    with pytest.raises(MalformedEnvelopeError, match="for agreement 'agr-1', expected 'agr-2'"):
        open_all(header, chunks, trailer, opener(expected_agreement="agr-2"))


def test_expired_header() -> None:
    header, chunks, trailer = seal(TABLE, ttl=5)
    with pytest.raises(EnvelopeExpiredError, match="envelope expired at"):
        open_all(header, chunks, trailer)


def test_replayed_share_id_is_refused_across_restarts(tmp_path: Path) -> None:
    header, chunks, trailer = seal(TABLE)
    store = ExchangeStore(tmp_path / "exchange.db")
    open_all(header, chunks, trailer, opener(replay=store))
    store.close()
    reopened = ExchangeStore(tmp_path / "exchange.db")
    with pytest.raises(ReplayError, match="already received"):
        open_all(header, chunks, trailer, opener(replay=reopened))


def test_chunk_before_header_and_second_header() -> None:
    header, chunks, _ = seal(TABLE)
    o = opener()
    with pytest.raises(MalformedEnvelopeError, match="before the header"):
        o.open_chunk(chunks[0])
    o.open_header(header)
    with pytest.raises(MalformedEnvelopeError, match="second header"):
        o.open_header(header)


def test_header_parse_roundtrip() -> None:
    header, _, _ = seal(TABLE)
    parsed = env.parse_header(header)
    assert (parsed.sender, parsed.recipient, parsed.agreement, parsed.dataset) == (
        "health",
        "statistics",
        "agr-1",
        "visits",
    )
    assert parsed.schema.equals(TABLE.schema)
    assert parsed.expires == NOW + 3600


# --- property tests ---------------------------------------------------------

_SMALL = seal(vectors.table(40), limit=512)


@settings(max_examples=150, deadline=None)
@given(frame=st.integers(min_value=0), bit=st.integers(min_value=0))
def test_any_single_bit_flip_is_refused(frame: int, bit: int) -> None:
    header, chunks, trailer = _SMALL
    frames = [header, *chunks, trailer]
    which = frame % len(frames)
    target = frames[which]
    position = bit % (len(target) * 8)
    flipped = bytearray(target)
    flipped[position // 8] ^= 1 << (position % 8)
    frames[which] = bytes(flipped)
    with pytest.raises(EnvelopeError):
        open_all(frames[0], frames[1:-1], frames[-1])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_parsers_raise_only_envelope_errors(data: bytes) -> None:
    for parse in (env.parse_header, env.parse_chunk_frame, env.parse_trailer):
        with contextlib.suppress(EnvelopeError):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0), extra=st.binary(max_size=8))
def test_header_truncation_and_garbage_are_malformed(cut: int, extra: bytes) -> None:
    header = _SMALL[0]
    short = header[: cut % len(header)]
    for data in (short, header + extra if extra else short):
        with pytest.raises(EnvelopeError):
            opener().open_header(data)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(-(2**62), 2**62), st.one_of(st.none(), st.text(max_size=40))),
        max_size=200,
    ),
    limit=st.integers(min_value=1024, max_value=8192),
)
def test_round_trip_property(rows: list[tuple[int, str | None]], limit: int) -> None:
    data = pa.table(
        {"n": pa.array([r[0] for r in rows], pa.int64()), "s": pa.array([r[1] for r in rows])},
        schema=pa.schema([("n", pa.int64()), ("s", pa.string())]),
    )
    header, chunks, trailer = seal(data, limit=limit)
    assert open_all(header, chunks, trailer).equals(data)


# --- committed vectors ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(vectors.CASES))
def test_committed_vector_reproduces_and_opens(name: str) -> None:
    committed = json.loads((vectors.VECTOR_DIR / f"{name}.json").read_text())
    header = bytes.fromhex(committed["header"])
    rebuilt = vectors.build(name, env.parse_header(header).wrapped_key)
    assert rebuilt == committed
    chunks = [bytes.fromhex(c) for c in committed["chunks"]]
    o = opener(now=lambda: committed["created"])
    got = open_all(header, chunks, bytes.fromhex(committed["trailer"]), o)
    assert got.to_pylist() == committed["table_json"]
    assert o.digest_text == committed["digest"]
    wrong = opener(hpke=generate_hpke(), now=lambda: committed["created"])
    with pytest.raises(WrongRecipientError):
        wrong.open_header(header)


def test_sender_not_in_directory() -> None:
    header = seal(TABLE)[0]
    forged = env.EnvelopeOpener(
        recipient="statistics",
        hpke=RECIPIENT,
        sender_key=lambda dept: sender_keys("finance"),
        now=lambda: NOW,
    )
    with pytest.raises(UnexpectedSenderError, match="'health' is not a known peer"):
        forged.open_header(header)


# --- compression -------------------------------------------------------------------
#
# A hostile sender holds the content key, so it can seal any plaintext it likes;
# these cases seal crafted chunk bodies and check the recipient refuses each
# before it allocates more than one chunk's worth.

HOSTILE_KEY = bytes(range(32))


def hostile_share(
    compression: str, body: bytes, schema: pa.Schema = TABLE.schema
) -> tuple[bytes, list[bytes]]:
    sealer = make_sealer(schema, content_key=HOSTILE_KEY, compression=compression)
    aad = env.parse_header(sealer.header).digest
    sealed = AESGCM(HOSTILE_KEY).encrypt(env.chunk_nonce(0, True), body, aad)
    return sealer.header, [env.encode_chunk_frame(0, True, sealed)]


BATCH = TABLE.to_batches()[0]
PLAIN = env.MessageEncoder("none")(BATCH).to_pybytes()
PACKED = env.MessageEncoder("zstd")(BATCH).to_pybytes()
IDS = pa.record_batch({"id": pa.array(range(1000), pa.int64())})


def with_declared_size(message: bytes, size: int) -> bytes:
    """``message`` (zstd, one int64 column without nulls) with its data buffer's
    decoded size prefix, the first 8 bytes of the body, replaced."""
    body_at = len(message) - pa.ipc.read_message(pa.py_buffer(message)).body.size
    assert struct.unpack_from("<q", message, body_at)[0] == IDS.nbytes  # the prefix is there
    return message[:body_at] + struct.pack("<q", size) + message[body_at + 8 :]


IDS_PACKED = env.MessageEncoder("zstd")(IDS).to_pybytes()

HOSTILE_BODIES = [
    pytest.param(
        "none",
        PACKED,
        TABLE.schema,
        "not allowed by the header",
        id="zstd-message-under-an-uncompressed-header",
    ),
    pytest.param(
        "zstd",
        with_declared_size(IDS_PACKED, 2**40),
        IDS.schema,
        "decodes to more than the",
        id="decompression-bomb",
    ),
    pytest.param(
        "zstd",
        with_declared_size(IDS_PACKED, -5),
        IDS.schema,
        "negative size",
        id="negative-declared-size",
    ),
    pytest.param("zstd", PLAIN, IDS.schema, "does not fit the schema", id="other-schema"),
    pytest.param(
        "zstd", b"not an arrow message", TABLE.schema, "not an encapsulated", id="garbage"
    ),
    pytest.param(
        "zstd",
        BATCH.schema.serialize().to_pybytes(),
        TABLE.schema,
        "is not a record batch",
        id="schema-message",
    ),
    pytest.param("zstd", PLAIN[:-8], TABLE.schema, "declares a .*-byte body", id="truncated"),
]


@pytest.mark.parametrize(("compression", "body", "schema", "match"), HOSTILE_BODIES)
def test_hostile_chunk_bodies_are_refused(
    compression: str, body: bytes, schema: pa.Schema, match: str
) -> None:
    header, chunks = hostile_share(compression, body, schema)
    o = opener()
    o.open_header(header)
    with pytest.raises(MalformedEnvelopeError, match=match):
        o.open_chunk(chunks[0])


@pytest.mark.parametrize(("compression", "body"), [("zstd", PACKED), ("none", PLAIN)])
def test_well_formed_hostile_body_opens(compression: str, body: bytes) -> None:
    # The crafting helper itself is sound: a correct body under the same key opens.
    header, chunks = hostile_share(compression, body)
    o = opener()
    o.open_header(header)
    message = o.open_chunk(chunks[0])
    assert message is not None and message.rows == BATCH.num_rows
    assert message.decode().equals(BATCH)


def test_corrupt_compressed_buffer_fails_when_decoded() -> None:
    # Structure and sizes check out, so the message is accepted unopened; the
    # corrupt zstd frame inside fails the share wherever it is decoded.
    body_at = len(IDS_PACKED) - pa.ipc.read_message(pa.py_buffer(IDS_PACKED)).body.size
    corrupt = bytearray(IDS_PACKED)
    corrupt[body_at + 8 : body_at + 16] = b"\xff" * 8
    header, chunks = hostile_share("zstd", bytes(corrupt), IDS.schema)
    o = opener()
    o.open_header(header)
    message = o.open_chunk(chunks[0])
    assert message is not None
    with pytest.raises(MalformedEnvelopeError, match="does not decode"):
        message.decode()


def test_unknown_header_compression_is_malformed() -> None:
    header = bytearray(seal(TABLE)[0])
    parsed = env.parse_header(bytes(header))
    offset = header.index(parsed.wrapped_key) - 11  # before rows_hint and wrapped_len
    assert header[offset] == env.COMPRESSIONS["zstd"]
    header[offset] = 0x07
    with pytest.raises(MalformedEnvelopeError, match="unknown compression 0x07"):
        env.parse_header(bytes(header))


def test_rows_hint_round_trips_and_is_only_a_hint() -> None:
    data = vectors.table(120)
    assert env.parse_header(seal(data)[0]).rows_hint == 0
    sealer = make_sealer(data.schema, rows_hint=10**6)
    frames = [f for b in data.to_batches() for f in sealer.add(b)]
    final, trailer = sealer.finish()
    assert env.parse_header(sealer.header).rows_hint == 10**6
    # A wrong estimate does not fail the share: the trailer's count is what is checked.
    assert open_all(sealer.header, [*frames, final], trailer).num_rows == 120


def test_sealer_refuses_an_unknown_compression() -> None:
    with pytest.raises(ExchangeError, match="unknown compression 'lzma'"):
        seal(TABLE, compression="lzma")


def test_compressed_and_uncompressed_shares_carry_the_same_table() -> None:
    data = vectors.table(2000)
    packed = seal(data, limit=env.MAX_CHUNK_PLAINTEXT, batch_rows=1000)
    plain = seal(data, limit=env.MAX_CHUNK_PLAINTEXT, compression="none", batch_rows=1000)
    assert env.parse_header(packed[0]).compression == "zstd"
    assert env.parse_header(plain[0]).compression == "none"
    assert sum(map(len, packed[1])) * 2 < sum(map(len, plain[1]))
    assert open_all(*packed).equals(open_all(*plain))


def test_incompressible_data_still_fits_the_chunk_limit() -> None:
    # zstd adds a few bytes to each incompressible buffer, so a piece that fits
    # plain can overflow encoded; the sealer halves it instead of failing.
    noise = pa.table({"b": pa.array([os.urandom(64) for _ in range(500)], pa.binary())})
    limit = 4096
    header, chunks, trailer = seal(noise, limit=limit)
    assert all(len(c) <= limit + env.CHUNK_OVERHEAD for c in chunks)
    assert open_all(header, chunks, trailer).equals(noise)


def test_encode_within_halves_until_it_fits_and_refuses_one_huge_row() -> None:
    encode = env.MessageEncoder("zstd")
    noise = pa.record_batch({"b": pa.array([os.urandom(200) for _ in range(64)], pa.binary())})
    messages = env.encode_within(noise, encode, 2048)
    assert len(messages) > 4 and all(m.size <= 2048 for m in messages)
    rows = sum(pa.ipc.read_record_batch(m, noise.schema).num_rows for m in messages)
    assert rows == 64
    with pytest.raises(ExchangeError, match="one row encodes to"):
        env.encode_within(noise.slice(0, 1), encode, 256)


def test_sealing_runs_ahead_across_batches_and_finish_drains_in_order() -> None:
    data = vectors.table(3000)
    sealer = make_sealer(data.schema, chunk_limit=2048)
    early = [c for b in data.to_batches(max_chunksize=100) for c in sealer.add_sealed(b)]
    rest, trailer = sealer.finish_sealed()
    assert rest, "messages still in flight come out of finish_sealed"
    chunks = [*early, *rest]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert open_all(sealer.header, [c.frame for c in chunks], trailer).equals(data)


def test_split_batch_bounds_rows_as_well_as_bytes() -> None:
    # A null column has no buffers: only the row bound keeps its chunks small.
    nulls = pa.record_batch({"z": pa.nulls(3 * ipc_message.MAX_CHUNK_ROWS + 5)})
    pieces = list(env.split_batch(nulls))
    assert [p.num_rows for p in pieces] == [ipc_message.MAX_CHUNK_ROWS] * 3 + [5]


def test_a_header_schema_no_chunk_could_match_fails_before_the_share_id_is_claimed(
    tmp_path: Path,
) -> None:
    union = pa.schema({"u": pa.dense_union([pa.field("x", pa.int8())])})
    with pytest.raises(ExchangeError, match="holds a union type"):
        make_sealer(union)
    # A sender that builds such a header anyway: the opener refuses it and claims nothing.
    header = make_sealer(TABLE.schema).header
    parsed = env.parse_header(header)
    forged = env._header_body(
        share_id=parsed.share_id, sender="health", recipient="statistics", agreement="agr-1",
        dataset="visits", created=NOW, expires=NOW + 3600, compression="zstd", rows_hint=0,
        wrapped_key=parsed.wrapped_key, schema_bytes=union.serialize().to_pybytes(),
    )  # fmt: skip
    forged_header = forged + SENDER.sign(env.HEADER_SIGNATURE_CONTEXT + forged)
    store = ExchangeStore(tmp_path / "exchange.db")
    with pytest.raises(MalformedEnvelopeError, match="holds a union type"):
        opener(replay=store).open_header(forged_header)
    opener(replay=store).open_header(header)  # the same share id was not taken


def test_the_sealer_splits_chunks_to_the_element_bound_the_opener_enforces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Booleans in lists: the bytes fit one chunk easily, the elements do not.
    for module in (env, ipc_message):
        monkeypatch.setattr(module, "MAX_CHUNK_ELEMENTS", 1000)
    flags = pa.table(
        {
            "f": pa.array([[i % 2 == 0] * (i % 20) for i in range(600)], pa.list_(pa.bool_())),
            "z": pa.nulls(600),
        }
    )
    header, chunks, trailer = seal(flags, limit=1 << 20, batch_rows=600)
    assert len(chunks) > 6
    assert open_all(header, chunks, trailer).equals(flags)
    too_long = pa.record_batch({"f": pa.array([[True] * 1000], pa.list_(pa.bool_()))})
    with pytest.raises(ExchangeError, match=r"one row encodes to \d+ bytes and 1001 elements"):
        env.encode_within(too_long, env.MessageEncoder("zstd"), 1 << 20)


def _signed_header(schema_bytes: bytes) -> bytes:
    """A header validly signed by the sender around arbitrary schema bytes."""
    share_id = os.urandom(env.SHARE_ID_LEN)
    wrapped = HPKE_SUITE.encrypt(
        os.urandom(env.CONTENT_KEY_LEN),
        hpke_public_from_bytes(RECIPIENT.public_bytes),
        info=env.hpke_info(share_id, "health", "statistics"),
    )
    body = env._header_body(
        share_id=share_id, sender="health", recipient="statistics", agreement="agr-1",
        dataset="visits", created=NOW, expires=NOW + 3600, compression="none", rows_hint=0,
        wrapped_key=wrapped, schema_bytes=schema_bytes,
    )  # fmt: skip
    return body + SENDER.sign(env.HEADER_SIGNATURE_CONTEXT + body)


def _misnamed(schema: pa.Schema, name: bytes) -> bytes:
    raw: bytes = schema.serialize().to_pybytes()
    assert raw.count(name) == 1
    return raw.replace(name, b"\xff\xfe" + name[2:])


@pytest.mark.parametrize(
    "schema",
    [
        pa.schema({"abcd": pa.string()}),
        pa.schema({"n": pa.int64(), "s": pa.struct([("abcd", pa.int8())])}),
        pa.schema({"l": pa.list_(pa.field("abcd", pa.string()))}),
    ],
    ids=["column", "struct-field", "list-item"],
)
def test_a_field_name_that_is_not_utf8_is_a_malformed_header(
    schema: pa.Schema, tmp_path: Path
) -> None:
    store = ExchangeStore(tmp_path / "exchange.db")
    header = _signed_header(_misnamed(schema, b"abcd"))
    with pytest.raises(MalformedEnvelopeError, match="field name that is not UTF-8"):
        opener(replay=store).open_header(header)
    # Refused before its share id is claimed.
    store.claim(env.parse_header(header).share_id)
