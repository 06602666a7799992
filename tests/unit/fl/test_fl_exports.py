"""The federated-learning package's public names are pinned."""

from __future__ import annotations

import node.fl
from node.errors import AccessDenied, FederatedError


def test_exported_names() -> None:
    assert sorted(node.fl.__all__) == [
        "AppBundleError",
        "AppNotApprovedError",
        "GridEvent",
        "GrpcSender",
        "JobFailedError",
        "JobFileError",
        "JobLimitError",
        "NodeGrid",
        "NodesUnavailableError",
        "Sender",
        "UnknownJobError",
        "WireError",
    ]
    for name in node.fl.__all__:
        assert getattr(node.fl, name) is not None


def test_errors_hang_off_the_node_error_tree() -> None:
    for error in (
        node.fl.AppBundleError,
        node.fl.JobFailedError,
        node.fl.JobFileError,
        node.fl.JobLimitError,
        node.fl.NodesUnavailableError,
        node.fl.UnknownJobError,
        node.fl.WireError,
    ):
        assert issubclass(error, FederatedError)
    assert issubclass(node.fl.AppNotApprovedError, AccessDenied)
