"""Turn what native libraries write to stderr into the node's JSON log lines.

gRPC's core (C++) logs on file descriptor 2 in its own plain-text format,
for example a client that fails the TLS handshake::

    I1129 06:57:11.096913   16188 ssl_transport_security.cc:2563] Handshake failed ...

Among a node's JSON lines such a line breaks any log shipper that parses
them, yet it is the only trace of a connection refused before any RPC (a
foreign, expired or missing client certificate), which an operations team
wants to see. So ``fednode serve`` points descriptor 2 at a pipe and a reader
thread logs each line through :mod:`logging` (logger ``grpc``) with its level,
source and, for handshake failures, ``event: tls.handshake_failed``.

Invariants:

* Python's own output (tracebacks, the JSON handler, and faulthandler's
  dump of a crashing thread) keeps going to the original stderr, never
  through the pipe, so a crash report cannot be lost with the reader thread;
* the pipe's write end is non-blocking: if the reader falls behind, native
  lines are dropped rather than stalling a gRPC thread;
* :func:`restore_native_stderr` puts descriptor 2 back and logs what was
  still in the pipe, so lines written while the node stops are kept.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

__all__ = ["NativeLine", "capture_native_stderr", "parse_native_line", "restore_native_stderr"]

log = logging.getLogger("grpc")

#: absl/glog prefix: level letter, MMDD, time, thread id, source file:line, then "] ".
_PREFIX = re.compile(
    r"^(?P<level>[IWEF])\d{4} [0-9:.]+\s+\d+ (?P<source>[^\s\]]+:\d+)\] (?P<msg>.*)$"
)
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
#: Big enough for a burst of handshake failures while the reader waits for the GIL.
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass(frozen=True)
class NativeLine:
    level: int
    message: str
    source: str | None
    event: str


def parse_native_line(line: str) -> NativeLine:
    """Classify one line a native library wrote; lines without the absl prefix stay whole."""
    match = _PREFIX.match(line)
    if match is None:
        return NativeLine(logging.WARNING, line, None, "native.stderr")
    message = match["msg"]
    level = _LEVELS[match["level"]]
    if "Handshake failed" in message:
        # gRPC rates it informational; for a node it is a refused connection
        # (foreign, expired or missing client certificate, or not TLS at all).
        return NativeLine(
            max(level, logging.WARNING), message, match["source"], "tls.handshake_failed"
        )
    return NativeLine(level, message, match["source"], "grpc.core")


@dataclass
class _Capture:
    original: int
    reader: threading.Thread


#: The capture in force, if any (at most one per process).
_active: list[_Capture] = []


def _pump(fd: int) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                continue
            line = parse_native_line(text)
            extra: dict[str, object] = {"event": line.event}
            if line.source is not None:
                extra["source"] = line.source
            log.log(line.level, line.message, extra=extra)


def capture_native_stderr() -> TextIO:
    """Send descriptor 2 through the JSON log; returns the stream Python should log to.

    Call it before the log handler is created, and give that handler the
    returned stream (the original stderr). Calling it twice is harmless.
    """
    if _active:
        return sys.stderr
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # a smaller default pipe only drops lines sooner
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(
        original, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False
    )
    sys.stderr = stream
    faulthandler.enable(file=stream)
    reader = threading.Thread(target=_pump, args=(read_end,), name="native-stderr", daemon=True)
    reader.start()
    _active.append(_Capture(original, reader))
    return stream


def restore_native_stderr(timeout: float = 2.0) -> None:
    """Point descriptor 2 back at the original stderr and log the lines still queued."""
    if not _active:
        return
    capture = _active.pop()
    # Replacing descriptor 2 closes the pipe's last write end, so the reader sees
    # end-of-file once it has logged everything written before this point.
    os.dup2(capture.original, 2)
    capture.reader.join(timeout)
