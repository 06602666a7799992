"""Admin command ``share.fetch``: the consumer fetches a share from a provider.

Each argument is checked for its JSON type before use: a value of the wrong
type ends with a one-line :class:`ArgumentError` naming the argument, never
with the text of a ``ValueError`` from a conversion inside the command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import node.errors as node_errors
from node.admin.args import ArgumentError
from node.admin.registry import Emit, admin_command
from node.errors import NodeError, brief
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


def _str_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ArgumentError(f"argument {name!r} must be a string, got {brief(value, 40)}")
    return value


def _optional_str(args: dict[str, Any], name: str) -> str | None:
    """``None`` for an absent, null or empty argument."""
    return _str_arg(args, name) if args.get(name) not in (None, "") else None


def _positive(args: dict[str, Any], name: str, what: str, *, whole: bool) -> float | None:
    """Positive number argument ``name``; ``None`` when absent, null or 0 (the default).

    Raises:
        ArgumentError: it is not a finite positive number (an integer if ``whole``).
    """
    value = args.get(name)
    # bool is an int in Python, but true is no number; JSON may carry NaN or Infinity.
    number = isinstance(value, int) or (isinstance(value, float) and not whole)
    if value is None or (number and value == 0 and not isinstance(value, bool)):
        return None
    if not number or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ArgumentError(f"argument {name!r} must be {what}, got {brief(value, 40)}")
    return float(value) if not whole else value


def _columns_arg(args: dict[str, Any]) -> list[str] | None:
    value = args.get("columns") or None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ArgumentError(
            f"argument 'columns' must be a list of column names, got {brief(value, 40)}"
        )
    return value


@admin_command("share.fetch")
def share_fetch(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Fetch a share: args ``from``, ``agreement``, ``out`` (absolute), optional ``format``,
    ``columns``, ``compression``, ``overwrite``, ``validate``, ``limit_rate`` (bytes/s),
    ``deadline_s``."""
    rate = _positive(args, "limit_rate", "a positive integer (bytes per second)", whole=True)
    limit_rate = None if rate is None else int(rate)
    deadline_s = _positive(args, "deadline_s", "a positive number of seconds", whole=False)
    validate = args.get("validate", False)
    overwrite = args.get("overwrite", False)
    for name, flag in (("validate", validate), ("overwrite", overwrite)):
        if flag is not None and not isinstance(flag, bool):
            raise ArgumentError(f"argument {name!r} must be true or false, got {brief(flag, 40)}")
    provider = _str_arg(args, "from")
    agreement_id = _str_arg(args, "agreement")
    out = Path(_str_arg(args, "out"))
    fmt = _optional_str(args, "format")
    columns = _columns_arg(args)
    compression = _optional_str(args, "compression") or DEFAULT_COMPRESSION
    try:
        result = fetch_share(
            runtime,
            provider=provider,
            agreement_id=agreement_id,
            out=out,
            fmt=fmt,
            columns=columns,
            compression=compression,
            overwrite=bool(overwrite),
            validate=bool(validate),
            limit_rate=limit_rate,
            deadline_s=float(deadline_s or DEFAULT_DEADLINE_S),
            emit=emit,
        )
    except NodeError as e:
        raise _public(e) from e
    return result.to_json()
