"""Documented exit codes of the ``fednode`` command.

Scripts and monitoring can branch on these; they are stable across releases.

==== =================================================================
code meaning
==== =================================================================
0    success
1    unexpected internal error (a bug; rerun with --debug and report it)
2    usage error: unknown command, bad option, an unusable output path, an
     argument naming something the node does not hold, or a ledger command
     that needs a published checkpoint first (run ``fednode ledger checkpoint``)
3    configuration: missing or malformed config, key or file
4    identity: certificate or federation directory refused
5    peer: another node could not be reached or refused the call (``status``:
     at least one peer did not answer)
6    policy: no agreement grants this, or the agreement is not valid now
7    integrity: a ledger, proof, envelope or bundle failed verification, the
     ledger file is damaged, or a witness reported a fork
8    admin: no node is running in --home, or its admin socket failed
9    catalog: a dataset is missing or unreadable
10   federated job failed
11   busy: another process (an ``sqlite3`` shell, a backup or copy in
     progress) holds open a file the command must rewrite; what was done is
     kept, and running the same command again once it is done finishes it
==== =================================================================
"""

from __future__ import annotations

from ledger.errors import LedgerDamageError, LedgerError, NotPublishedError, StorageError
from node.errors import (
    AdminError,
    AgreementError,
    BusyError,
    CatalogError,
    ConfigError,
    DirectoryError,
    EnvelopeError,
    ExchangeError,
    FederatedError,
    IdentityError,
    NodeError,
    OutputError,
    PeerError,
    RequestError,
)

__all__ = [
    "ADMIN",
    "BUSY",
    "CATALOG",
    "CONFIG",
    "FEDERATED",
    "IDENTITY",
    "INTEGRITY",
    "INTERNAL",
    "OK",
    "PEER",
    "POLICY",
    "USAGE",
    "UsageError",
    "code_for",
]

OK = 0
INTERNAL = 1
USAGE = 2
CONFIG = 3
IDENTITY = 4
PEER = 5
POLICY = 6
INTEGRITY = 7
ADMIN = 8
CATALOG = 9
FEDERATED = 10
BUSY = 11


class UsageError(NodeError):
    """A command-line value that cannot be used (exit 2): a missing file, a
    number out of range, a time in an unknown form. Raised by command handlers
    for checks argparse cannot make, such as reading the file an option names."""


# Order matters: subclasses before their bases.
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (UsageError, USAGE),
    (LedgerDamageError, INTEGRITY),
    (NotPublishedError, USAGE),
    (StorageError, CONFIG),
    (LedgerError, INTEGRITY),
    (ConfigError, CONFIG),
    (DirectoryError, IDENTITY),
    (IdentityError, IDENTITY),
    (PeerError, PEER),
    (AgreementError, POLICY),
    (EnvelopeError, INTEGRITY),
    (ExchangeError, PEER),
    (OutputError, USAGE),
    (RequestError, USAGE),
    (AdminError, ADMIN),
    (CatalogError, CATALOG),
    (FederatedError, FEDERATED),
    (BusyError, BUSY),
)


def code_for(error: BaseException) -> int:
    for kind, code in _TABLE:
        if isinstance(error, kind):
            return code
    return INTERNAL
