"""Errors raised while sealing, opening and receiving encrypted shares.

Every opener failure is a subclass of :class:`node.errors.EnvelopeError`, so a
caller can catch the whole family, and a test can name the exact cause::

    ExchangeError
    ├── ReceiptError              a receipt is malformed, badly signed or does not match the share
    └── EnvelopeError
        ├── MalformedEnvelopeError    bytes do not parse (lengths, UTF-8, Arrow IPC)
        ├── UnknownVersionError       the header does not start with a known version byte
        ├── EnvelopeSignatureError    the header or trailer signature does not verify
        ├── WrongRecipientError       addressed to another node, or not wrapped to our HPKE key
        ├── UnexpectedSenderError     signed by a department other than the one asked
        ├── EnvelopeExpiredError      the header's expiry has passed
        ├── ReplayError               the share_id was seen before
        ├── OutsideAgreementError     the header's dataset or columns are not what the agreement
        │                             shares, or not what was asked
        ├── ChunkTagError             an AES-GCM tag failed: a chunk was altered
        ├── ChunkGapError             a chunk is missing from the sequence
        ├── ChunkReorderError         chunks arrived out of order
        ├── DuplicateChunkError       a chunk arrived twice
        ├── MissingFinalChunkError    the stream ended before the chunk flagged final
        ├── ChunkAfterFinalError      a chunk followed the chunk flagged final
        └── TrailerMismatchError      the trailer's counts or digest disagree with what arrived
"""

from __future__ import annotations

from node.errors import EnvelopeError, ExchangeError

__all__ = [
    "ChunkAfterFinalError",
    "ChunkGapError",
    "ChunkReorderError",
    "ChunkTagError",
    "DuplicateChunkError",
    "EnvelopeError",
    "EnvelopeExpiredError",
    "EnvelopeSignatureError",
    "ExchangeError",
    "MalformedEnvelopeError",
    "MissingFinalChunkError",
    "OutsideAgreementError",
    "ReceiptError",
    "ReplayError",
    "TrailerMismatchError",
    "UnexpectedSenderError",
    "UnknownVersionError",
    "WrongRecipientError",
]


class ReceiptError(ExchangeError):
    """A receipt is malformed, badly signed, or does not match the share it acknowledges."""


class MalformedEnvelopeError(EnvelopeError):
    """Envelope bytes do not parse."""


class UnknownVersionError(EnvelopeError):
    """The header starts with a version byte this node does not implement."""


class EnvelopeSignatureError(EnvelopeError):
    """The header or trailer signature does not verify under the sender's key."""


class WrongRecipientError(EnvelopeError):
    """The envelope names another recipient, or its key is not wrapped to our HPKE key."""


class UnexpectedSenderError(EnvelopeError):
    """The envelope was sent by a department other than the one the share was asked from."""


class EnvelopeExpiredError(EnvelopeError):
    """The header's expiry time has passed."""


class ReplayError(EnvelopeError):
    """The share_id has been seen before."""


class OutsideAgreementError(EnvelopeError):
    """The header's dataset, columns or column types are not what the agreement shares,
    or its columns are not the ones asked for."""


class ChunkTagError(EnvelopeError):
    """A chunk failed AES-GCM authentication."""


class ChunkGapError(EnvelopeError):
    """A chunk is missing from the sequence."""


class ChunkReorderError(EnvelopeError):
    """Chunks arrived out of order."""


class DuplicateChunkError(EnvelopeError):
    """A chunk arrived twice."""


class MissingFinalChunkError(EnvelopeError):
    """The stream ended before the chunk flagged final arrived."""


class ChunkAfterFinalError(EnvelopeError):
    """A chunk followed the chunk flagged final."""


class TrailerMismatchError(EnvelopeError):
    """The trailer's row count, chunk count or digest disagree with what arrived."""
