"""Structured logs: one JSON object per line on stderr.

Operations teams ship these lines to their log platform unchanged, so every
line carries a timestamp, level, logger, message, and any ``extra=`` fields.
Nothing sensitive is logged: no key material, no data values.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["configure_logging", "route_to_json"]

#: Loggers of libraries that install their own handlers (Flower does, on import).
_LIBRARY_LOGGERS = ("flwr",)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, department: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if department:
        old_factory = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old_factory(*args, **kwargs)
            record.department = department
            return record

        logging.setLogRecordFactory(factory)
    # Libraries imported before logging was set up get the same treatment now.
    for name in _LIBRARY_LOGGERS:
        if name in logging.Logger.manager.loggerDict:
            route_to_json(name)


def route_to_json(name: str) -> None:
    """Send logger ``name`` (a library's, such as Flower's ``flwr``) through the JSON lines.

    Flower installs its own coloured console handler on import, which would
    put plain-text lines among a node's JSON lines (and print each record
    twice). Once :func:`configure_logging` has run, the library's handlers are
    removed and its records go to the root handler at the root's level.
    Without JSON logging (a CLI command) nothing changes.
    """
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(root.level)
