"""Admin commands of the catalog: ``dataset.add``, ``dataset.list``, ``dataset.show``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.admin.registry import Emit, admin_command
from node.catalog.loader import catalog_of
from node.errors import CatalogError

if TYPE_CHECKING:
    from node.runtime import NodeRuntime


@admin_command("dataset.add")
def dataset_add(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Register a dataset: args ``name``, ``path`` (absolute), optional ``format``, ``labels``,
    ``description`` and ``replace`` (re-register an existing name)."""
    labels = args.get("labels") or {}
    if not isinstance(labels, dict):
        raise CatalogError("labels must map column names to labels")
    catalog = catalog_of(runtime)
    name = str(args["name"])
    replace = bool(args.get("replace"))
    replaced = replace and any(d.name == name for d in catalog.list())
    info = catalog.add(
        name,
        Path(str(args["path"])),
        fmt=args.get("format") or None,
        labels={str(k): str(v) for k, v in labels.items()},
        description=str(args.get("description") or ""),
        replace=replace,
    )
    runtime.audit.record(
        "dataset.replaced" if replaced else "dataset.added",
        dataset=info.name,
        columns=info.schema.names,
        detail={"rows": info.rows, "format": info.format, "labels": info.labels},
    )
    return info.to_json()


@admin_command("dataset.list")
def dataset_list(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {"datasets": [d.to_json() for d in catalog_of(runtime).list()]}


@admin_command("dataset.show")
def dataset_show(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return catalog_of(runtime).get(str(args["name"])).to_json()
