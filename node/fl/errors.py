"""Errors of the federated learning subsystem.

All derive from :class:`node.errors.FederatedError` (or, for denials, from
:class:`node.errors.AccessDenied`), so the CLI maps them to the same exit
codes. The tree::

    FederatedError
    ├── JobFileError          a job file is missing, malformed or names something unusable
    │                         (also a RequestError: a usage error, exit 2, wherever it is found)
    ├── WireError             a StartJob / Deliver stream is malformed, truncated or oversized
    ├── AppBundleError        a FAB cannot be built, read, installed or loaded
    ├── UnknownJobError       a message names a job this participant does not run
    ├── JobLimitError         a coordinator already runs as many jobs here as it may
    └── JobFailedError        a job ended early (strategy minimums unmet, ServerApp raised)
        └── NodesUnavailableError  fewer participants remain than the strategy waits for
    AccessDenied
    └── AppNotApprovedError   the FAB's SHA-256 is not on the operator's approved list
"""

from __future__ import annotations

from node.errors import AccessDenied, FederatedError, RequestError

__all__ = [
    "AppBundleError",
    "AppNotApprovedError",
    "JobFailedError",
    "JobFileError",
    "JobLimitError",
    "NodesUnavailableError",
    "UnknownJobError",
    "WireError",
]


class JobFileError(RequestError, FederatedError):
    """A job file is missing, malformed, or names an app or participant that cannot be used.

    A usage error first: whether the terminal's own check or the node's read finds
    it, the command exits 2 (the admin socket sends the nearest public class,
    :class:`RequestError`), while code catching :class:`FederatedError` still does."""


class WireError(FederatedError):
    """A StartJob or Deliver stream is malformed, truncated, out of order or oversized."""


class AppBundleError(FederatedError):
    """A Flower App Bundle cannot be built, read, installed or loaded."""


class UnknownJobError(FederatedError):
    """A message names a job this participant does not run (or no longer runs)."""


class JobLimitError(FederatedError):
    """A coordinator already runs as many jobs at this participant as one may at once."""


class JobFailedError(FederatedError):
    """A federated job ended before its ServerApp finished."""


class NodesUnavailableError(JobFailedError):
    """Fewer participants remain reachable than the strategy waits for."""


class AppNotApprovedError(AccessDenied):
    """A FAB's SHA-256 is not on this node's approved list."""
