"""Admin commands of the catalog: ``dataset.add``, ``dataset.list``, ``dataset.show``.

``dataset.add`` reads the whole dataset before registering it and streams
``{"event": "progress", "rows": N, "bytes": B, "total_bytes": T, "seconds": S}``
events while it does (``total_bytes`` is null when the size is unknown), at
most a few per second and only once the read has taken a moment, so small
files show no progress at all. An operator who goes away (Ctrl-C) stops the
read at its next batch, and nothing is registered. ``list`` and ``show`` attach each dataset's
:class:`~node.catalog.registry.DatasetStatus`; ``list`` checks file metadata
only, ``show`` also the current schema.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.admin.cancel import check_cancelled
from node.admin.registry import Emit, admin_command
from node.catalog.loader import catalog_of
from node.catalog.registry import CatalogRequestError, SchemaChanges
from node.catalog.verify import ReadProgress

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

#: Seconds a registration read runs silently before progress is reported, and between reports.
PROGRESS_AFTER = 1.0
PROGRESS_EVERY = 0.5


class _Progress:
    """Throttles the read's progress into progress events."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._start = time.monotonic()
        self._next = self._start + PROGRESS_AFTER

    def __call__(self, progress: ReadProgress) -> None:
        # Called after every batch and file, before anything is registered: an
        # operator who went away (Ctrl-C) stops the read, and nothing is kept.
        check_cancelled()
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PROGRESS_EVERY
            self._emit(
                {
                    "event": "progress",
                    "rows": progress.rows,
                    "bytes": progress.bytes_read,
                    "total_bytes": progress.bytes_total,
                    "seconds": now - self._start,
                }
            )


@admin_command("dataset.add")
def dataset_add(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Register a dataset: args ``name``, ``path`` (absolute), optional ``format``, ``labels``,
    ``description`` (absent or null keeps a replaced dataset's description) and ``replace``
    (re-register an existing name). The result carries ``changes`` on a replace.

    Raises:
        CatalogError: as :meth:`node.catalog.registry.Catalog.add`.
    """
    name, path = args.get("name"), args.get("path")
    if not isinstance(name, str) or not name:
        raise CatalogRequestError("dataset.add needs a dataset name")
    if not isinstance(path, str) or not path:
        raise CatalogRequestError("dataset.add needs the dataset's path")
    if not Path(path).is_absolute():
        # The node resolves a relative path against its own working directory,
        # which is not the operator's: it could name another file.
        raise CatalogRequestError(
            f"dataset path {path!r} must be absolute", hint="'fednode dataset add' makes it so"
        )
    labels = args.get("labels") or {}
    if not isinstance(labels, dict):
        raise CatalogRequestError("labels must map column names to labels")
    description = args.get("description")
    catalog = catalog_of(runtime)
    replace = bool(args.get("replace"))
    previous = next((d for d in catalog.list() if d.name == name), None) if replace else None
    info = catalog.add(
        name,
        Path(path),
        fmt=args.get("format") or None,
        labels={str(k): str(v) for k, v in labels.items()},
        description=None if description is None else str(description),
        replace=replace,
        on_progress=_Progress(emit),
    )
    detail: dict[str, object] = {"rows": info.rows, "format": info.format, "labels": info.labels}
    result = info.to_json()
    if previous is not None:
        changes = SchemaChanges.between(previous.schema, info.schema).to_json()
        detail["changes"] = dict(changes)
        result["changes"] = changes
    runtime.audit.record(
        "dataset.replaced" if previous is not None else "dataset.added",
        dataset=info.name,
        columns=info.schema.names,
        detail=detail,
    )
    return result


@admin_command("dataset.list")
def dataset_list(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Every registered dataset with a status from file metadata (no schema or data read)."""
    catalog = catalog_of(runtime)
    return {
        "datasets": [
            {**d.to_json(), "status": catalog.status(d, schema=False).to_json()}
            for d in catalog.list()
        ]
    }


@admin_command("dataset.show")
def dataset_show(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """One dataset with a status from file metadata and its current schema.

    Raises:
        CatalogError: no dataset has that name.
    """
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogRequestError("dataset.show needs a dataset name")
    catalog = catalog_of(runtime)
    info = catalog.get(name)
    return {**info.to_json(), "status": catalog.status(info).to_json()}
