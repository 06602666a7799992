"""What a launch checks about a job before any participant is contacted.

``fednode fl launch`` runs these checks in the operator's terminal (so a
mistake in the job file is a usage error there, exit 2) and the node runs them
again when the job starts (the file may have changed in between).

Invariant: every refusal here is a :class:`JobFileError` whose message starts
with the job file's path, names the key (or the path) to change, and whose
hint says how. A job that passes fails later only for reasons outside its
file: a participant refuses or is lost, or the app itself fails.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from node.fl.bundle import AppBundle, build_bundle
from node.fl.errors import AppBundleError, JobFileError
from node.fl.jobfile import JobFile, load_job_file

__all__ = ["check_job_file", "check_run_config", "job_bundle"]


def job_bundle(job: JobFile) -> AppBundle:
    """The FAB of the job's ``[job].app``.

    Raises:
        JobFileError: the app path does not exist.
        AppBundleError: the app exists but does not build or is not a FAB.
    """
    try:
        return build_bundle(job.app)
    except AppBundleError as e:
        if job.app.exists():
            raise
        where = f"{job.path}: [job].app" if job.path else "[job].app"
        raise JobFileError(
            f"{where} names {job.app}, which does not exist",
            hint="name an app directory or a .fab file; a relative path is relative "
            "to the job file",
        ) from e


def check_run_config(job: JobFile, bundle: AppBundle) -> None:
    """Refuse a run-config override the app does not declare.

    Flower would refuse it too, but only by its flattened name; this names the
    table and line of the job file and the app's nearest key.

    Raises:
        JobFileError: an override is not among the app's ``[tool.flwr.app.config]`` keys.
    """
    declared = sorted(bundle.default_config)
    for key in job.overrides:
        if key in bundle.default_config:
            continue
        near = difflib.get_close_matches(key, declared, n=1)
        raise JobFileError(
            f"{job.where(key)}: app {bundle.fab_id} has no run-config key {key!r}"
            + (f"; did you mean {near[0]!r}?" if near else ""),
            hint=f"the app declares: {', '.join(declared)}",
        )


def check_job_file(path: Path) -> tuple[JobFile, AppBundle]:
    """Read a job file and check it against its app; return both.

    Raises:
        JobFileError: the file is missing or invalid, its app path does not
            exist, or it overrides a key the app does not declare.
        AppBundleError: the app exists but does not build.
    """
    job = load_job_file(path)
    bundle = job_bundle(job)
    check_run_config(job, bundle)
    return job, bundle
