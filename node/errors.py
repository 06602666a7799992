"""Errors raised by the node package.

Every error the node raises derives from :class:`NodeError`. The CLI maps each
branch to one exit code (see ``node/cli/exit_codes.py``) and prints one line
with the cause and a hint. The tree::

    NodeError
    ├── ConfigError            a config file, key file or path is missing or malformed
    ├── IdentityError          a key, certificate or CA operation failed
    │   └── CertificateError   a certificate is foreign, revoked, expired or malformed
    ├── DirectoryError         a federation directory is malformed, badly signed, stale or expired
    │   └── UnknownPeerError   a peer is not listed in the current directory
    ├── PeerError              a peer could not be reached or refused the call
    ├── AgreementError         an agreement is malformed, unsigned, expired, revoked or too narrow
    │   └── AccessDenied       a request asked for something no agreement grants
    ├── CatalogError           a dataset is missing, unreadable, or of an unsupported format
    ├── ExchangeError          an encrypted share failed (envelope, stream, receipt)
    │   └── EnvelopeError      the envelope bytes are malformed, tampered, truncated or reordered
    ├── OutputError            an output path exists, its folder is missing, or it is not writable
    ├── RequestError           a command names something the node does not hold (a usage error)
    ├── BusyError              another process holds a file the command must rewrite; run it again
    ├── FederatedError         a federated job failed (policy gate, app approval, strategy minimums)
    └── AdminError             the local admin socket is missing, refused, or returned an error

Each error carries an optional ``hint``: one sentence on how to fix the cause.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node package raises."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(NodeError):
    """A config file, key file or path is missing or malformed."""


class IdentityError(NodeError):
    """A key, certificate or CA operation failed."""


class CertificateError(IdentityError):
    """A certificate is foreign, revoked, expired or malformed."""


class DirectoryError(NodeError):
    """A federation directory is malformed, badly signed, older than the one held, or expired."""


class StaleDirectoryError(DirectoryError):
    """A federation directory is valid but not newer than the one this node holds."""


class UnknownPeerError(DirectoryError):
    """A peer department is not listed in the current federation directory."""


class PeerError(NodeError):
    """A peer could not be reached, or refused the call."""


class AgreementError(NodeError):
    """An agreement is malformed, unsigned, expired, revoked, or does not allow the mode."""


class AccessDenied(AgreementError):  # noqa: N818 -- reads as a decision, as in the ledger's access.denied
    """A request asked for data or a mode that no agreement grants."""


class CatalogError(NodeError):
    """A dataset is missing, unreadable, or in an unsupported format."""


class ExchangeError(NodeError):
    """An encrypted share failed."""


class EnvelopeError(ExchangeError):
    """Envelope bytes are malformed, tampered, truncated, reordered or replayed."""


class OutputError(NodeError):
    """An output path cannot be used: it exists, its folder is missing, or it is not
    writable. Checked before any work whose result would have nowhere to go."""


class RequestError(NodeError):
    """A command's arguments name something the node does not hold, such as a ledger
    field that is not committed: a usage error the node can only detect itself."""


class BusyError(NodeError):
    """Another process holds open a file the command must rewrite, and did not let go
    within the command's wait. What the command did is kept; running it again once
    that process is done finishes it."""


class FederatedError(NodeError):
    """A federated job failed."""


class AdminError(NodeError):
    """The local admin socket is missing, refused the call, or returned an error."""


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters.

    For echoing a value a peer sent into an error message, a log line or a
    ledger entry: a peer must not be able to make any of them arbitrarily long.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
