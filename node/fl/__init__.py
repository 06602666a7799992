"""Federated learning: standard Flower Apps trained across departments' nodes.

The coordinator runs a job's ServerApp against :class:`~node.fl.grid.NodeGrid`,
a Flower ``Grid`` whose nodes are departments reached over the node's mTLS
``Federated`` service; each participant runs the job's ClientApp behind the
policy gate, ledger, SecAgg+ and DP mods (:mod:`node.fl.mods`). Apps travel
as Flower App Bundles identified by SHA-256 and run only where an operator
approved them.

Modules:

* :mod:`node.fl.grid` -- NodeGrid and its transport (``Sender``, ``GrpcSender``).
* :mod:`node.fl.participant` -- admission, one Flower Context per run, the mod chain.
* :mod:`node.fl.mods` -- policy gate, ledger, guard and DP mods.
* :mod:`node.fl.coordinator` -- ``run_job``: start, run, end, results, ledger.
* :mod:`node.fl.idle` -- idle limits: the coordinator's KeepJob, the participant's timer.
* :mod:`node.fl.wire` -- the only module that touches the Federated protos.
* :mod:`node.fl.bundle`, :mod:`node.fl.approvals` -- FABs and the approved list.
* :mod:`node.fl.jobfile`, :mod:`node.fl.results` -- job files and results on disk.
* :mod:`node.fl.service`, :mod:`node.fl.admin` -- the gRPC service and admin commands.
"""

from __future__ import annotations

from node.fl.errors import (
    AppBundleError,
    AppNotApprovedError,
    JobFailedError,
    JobFileError,
    JobLimitError,
    NodesUnavailableError,
    UnknownJobError,
    WireError,
)
from node.fl.grid import GridEvent, GrpcSender, NodeGrid, Sender
from node.logs import route_to_json

# Importing the grid imported Flower, which set up its own console logging.
route_to_json("flwr")

__all__ = [
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
