"""Admin commands of the federated-learning subsystem (local operator socket only).

``fl.launch`` runs a job in the node daemon, because the coordinator needs the
node's mTLS identity to reach the participants; it streams progress events
(``job.started``, ``participant``, ``reply``, ``phase``, ``job.finished``) to
the operator's terminal and returns the job summary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from node.admin.registry import Emit, admin_command
from node.fl.coordinator import JobStatusStore, run_job
from node.fl.errors import JobFileError
from node.fl.jobfile import load_job_file
from node.runtime import NodeRuntime

__all__ = ["fl_launch", "fl_status"]


@admin_command("fl.launch")
def fl_launch(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run the job file ``args["job_file"]`` (an absolute path) to the end;
    ``args["overwrite"]`` (default false) lets it replace earlier results in its output folder.

    Raises:
        JobFileError: no job file named, or it is invalid.
        OutputError: its output folder holds results and overwrite is not set,
            or another job writes there.
        JobFailedError: the job ended early (see the summary in its output directory).
    """
    path = args.get("job_file")
    if not isinstance(path, str) or not Path(path).is_absolute():
        raise JobFileError("fl.launch needs the absolute path of a job file")
    overwrite = args.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise JobFileError("fl.launch: overwrite must be true or false")
    return run_job(runtime, load_job_file(Path(path)), emit, overwrite=overwrite)


@admin_command("fl.status")
def fl_status(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """The status records of the jobs this node coordinated."""
    return {"jobs": JobStatusStore(runtime.config.data_dir).read_all(os.getpid())}
