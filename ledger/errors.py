"""Errors raised by the ledger package.

Every error the package raises derives from :class:`LedgerError`, so callers
can catch one type. The tree::

    LedgerError
    ├── CanonicalJSONError       bytes or values that are not canonical JSON (RFC 8785, no floats)
    ├── EntryError               a ledger entry that is malformed or has an unknown version
    ├── ProofError               an inclusion or consistency proof that does not verify
    ├── CheckpointError          a checkpoint note that is malformed or badly signed
    ├── StorageError             the store is unreadable, of an unknown version, or inconsistent
    ├── WitnessError             a witness refused a checkpoint (for example, a fork)
    └── VerificationError        an offline bundle check failed; names the entry or checkpoint

Subsystems may add subclasses; they stay under this root.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger package raises."""


class CanonicalJSONError(LedgerError):
    """A value or a byte string is not canonical JSON as fednode defines it."""


class EntryError(LedgerError):
    """A ledger entry is malformed or carries an unknown version."""


class ProofError(LedgerError):
    """An inclusion or consistency proof does not verify."""


class CheckpointError(LedgerError):
    """A checkpoint note is malformed, or its signature does not verify."""


class StorageError(LedgerError):
    """The ledger store is unreadable, of an unknown schema version, or inconsistent."""


class NotPublishedError(StorageError):
    """A request needs a published (witness-cosigned) checkpoint, and there is none yet
    that covers it: running ``fednode ledger checkpoint`` first resolves it."""


class LedgerDamageError(StorageError):
    """The ledger file is damaged: entries or checkpoints are missing or corrupt,
    or SQLite cannot read it as a database. The remedy is a restore from backup."""


class WitnessError(LedgerError):
    """A witness refused to cosign a checkpoint."""


class VerificationError(LedgerError):
    """An offline verification of an auditor bundle failed."""
