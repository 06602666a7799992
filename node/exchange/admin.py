"""Admin command ``share.fetch``: the consumer fetches a share from a provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import node.errors as node_errors
from node.admin.registry import Emit, admin_command
from node.errors import NodeError
from node.exchange.consumer import DEFAULT_DEADLINE_S, fetch_share
from node.exchange.convert import DEFAULT_COMPRESSION

if TYPE_CHECKING:
    from node.runtime import NodeRuntime


def _public(error: NodeError) -> NodeError:
    """The same error as its nearest class in node.errors, so the CLI maps its exit code.

    The message keeps the precise cause (for example which chunk failed which check).
    """
    for cls in type(error).__mro__:
        if getattr(node_errors, cls.__name__, None) is cls:
            if cls is type(error):
                return error
            return cls(f"{error} [{type(error).__name__}]", hint=error.hint)  # type: ignore[no-any-return]
    return error


@admin_command("share.fetch")
def share_fetch(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Fetch a share: args ``from``, ``agreement``, ``out`` (absolute), optional ``format``,
    ``columns``, ``compression``, ``overwrite``, ``validate``, ``limit_rate`` (bytes/s),
    ``deadline_s``."""
    columns = args.get("columns") or None
    try:
        result = fetch_share(
            runtime,
            provider=str(args["from"]),
            agreement_id=str(args["agreement"]),
            out=Path(str(args["out"])),
            fmt=args.get("format") or None,
            columns=[str(c) for c in columns] if columns else None,
            compression=str(args.get("compression") or DEFAULT_COMPRESSION),
            overwrite=bool(args.get("overwrite")),
            validate=bool(args.get("validate")),
            limit_rate=int(args["limit_rate"]) if args.get("limit_rate") else None,
            deadline_s=float(args.get("deadline_s") or DEFAULT_DEADLINE_S),
            emit=emit,
        )
    except NodeError as e:
        raise _public(e) from e
    return result.to_json()
