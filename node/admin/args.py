"""Reading an admin command's arguments: every mistake in them is a one-line usage error.

The CLI sends each command a JSON object. Anything else that reaches the
admin socket (a script, an older or newer CLI) may send a document that is
not JSON, not an object, or lacks an argument a command indexes. Those end
with :class:`ArgumentError`, which names the argument, never with the text of
a ``KeyError`` or ``binascii.Error`` from inside a command.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from node.errors import AdminError, brief

__all__ = ["Args", "ArgumentError", "MissingArgumentError", "b64_arg", "parse_args"]


class ArgumentError(AdminError):
    """An admin request's arguments are missing, of the wrong type, or not a JSON object."""


class MissingArgumentError(ArgumentError, KeyError):
    """A required argument was not sent.

    It is a ``KeyError`` too, so a command that catches ``KeyError`` to give
    its own message for a missing argument still does.
    """

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message like a key.
        return str(self.args[0])


class Args(dict[str, Any]):
    """A command's arguments: reading one that was not sent is a usage error.

    Handlers index the arguments they require (``args["out"]``); a request
    that leaves one out must end with a message naming it, not with the
    text of a bare ``KeyError`` from deep inside the command.
    """

    def __missing__(self, key: str) -> Any:
        raise MissingArgumentError(
            f"missing argument {brief(key, 64)}",
            hint="the CLI sends every required argument; a client of the admin socket must too",
        )


def parse_args(raw: bytes) -> Args:
    """The JSON object ``raw`` holds, or an empty one for no bytes.

    Raises:
        ArgumentError: ``raw`` is not UTF-8 JSON, is nested too deeply, or is not an object.
    """
    try:
        args = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as e:
        # RecursionError: a deeply nested document exhausts the parser's stack.
        raise ArgumentError(f"arguments are not valid JSON: {type(e).__name__}") from e
    if not isinstance(args, dict):
        raise ArgumentError(f"arguments must be a JSON object, got {type(args).__name__}")
    return Args(args)


def b64_arg(args: dict[str, Any], name: str) -> bytes:
    """The bytes of base64 argument ``name``.

    Raises:
        ArgumentError: it is missing, not a string, or not strict base64.
    """
    value = args.get(name)
    if not isinstance(value, str):
        raise ArgumentError(f"argument {name!r} must be a base64 string, got {brief(value, 40)}")
    try:
        # validate=True: a non-alphabet byte is an error, not silently skipped.
        return base64.b64decode(value, validate=True)
    except ValueError as e:
        raise ArgumentError(f"argument {name!r} is not valid base64") from e
