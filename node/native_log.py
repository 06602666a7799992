"""Turn what native libraries write to stderr into the node's JSON log lines.

gRPC's core (C++) logs on file descriptor 2 in its own plain-text format,
for example a client that fails the TLS handshake::

    I1129 06:57:11.096913   16188 ssl_transport_security.cc:2563] Handshake failed ...

Among a node's JSON lines such a line breaks any log shipper that parses
them, yet it is the only trace of a TLS handshake that failed before any RPC
(a foreign, expired or missing client certificate), which an operations team
wants to see. So ``fednode serve`` points descriptor 2 at a pipe, and a small
drain process (``python -m node.native_log``) writes each line to the real
stderr as a JSON record (logger ``grpc``) with its level, source and, for
handshake failures, ``event: tls.handshake_failed``.

Invariants:

* the drain is a separate process, not a thread: when the node dies on a
  fatal error, its last words (``Fatal Python error``, gRPC's ``F`` line
  before an abort) are already in the pipe, and the drain writes them out
  once it reads end-of-file; a thread of the dying process could not;
* Python's own output (tracebacks, the JSON handler, and faulthandler's
  dump of a crashing thread) goes to the original stderr directly;
* the pipe's write end is non-blocking: if the drain falls behind, native
  lines are dropped rather than stalling a gRPC thread; the drain warns
  (``native.backlog``) when it finds the pipe nearly full, so a log with
  gaps says so;
* the drain ignores SIGINT and SIGTERM (sent to the whole group by Ctrl-C
  or systemd) and ends at end-of-file, so nothing queued is lost at stop.
"""

from __future__ import annotations

import array
import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from node.logs import JsonFormatter

__all__ = [
    "NativeLine",
    "capture_native_stderr",
    "drain",
    "parse_native_line",
    "restore_native_stderr",
]

#: absl/glog prefix: level letter, MMDD, time, thread id, source file:line, then "] ".
_PREFIX = re.compile(
    r"^(?P<level>[IWEF])\d{4} [0-9:.]+\s+\d+ (?P<source>[^\s\]]+:\d+)\] (?P<msg>.*)$"
)
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
#: Big enough for a burst of handshake failures while the drain catches up.
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_BACKLOG_EVERY_S = 10.0
#: A line longer than this is cut: a writer that never ends its line cannot
#: make the drain hold unbounded memory.
MAX_LINE = 64 * 1024


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
        # gRPC rates it informational; for a node it is a connection that never
        # became a call: refused by this node (no, a foreign or an expired client
        # certificate, or not TLS at all) or, calling out, refused by the peer.
        return NativeLine(
            max(level, logging.WARNING), message, match["source"], "tls.handshake_failed"
        )
    return NativeLine(level, message, match["source"], "grpc.core")


def _json_logger(out: TextIO) -> logging.Logger:
    """A logger of its own (not the process's tree) writing the node's JSON lines to ``out``."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("grpc", logging.DEBUG)
    logger.addHandler(handler)
    return logger


def _log(logger: logging.Logger, line: NativeLine, department: str | None) -> None:
    extra: dict[str, object] = {"event": line.event}
    if department:
        extra["department"] = department
    if line.source is not None:
        extra["source"] = line.source
    logger.log(line.level, line.message, extra=extra)


def drain(
    lines: Iterable[bytes],
    out: TextIO,
    department: str | None,
    backlog: Callable[[], int] = lambda: 0,
) -> None:
    """Write each native line read from ``lines`` to ``out`` as one JSON line.

    ``backlog`` gives the bytes still waiting in the pipe; when it nears the
    pipe's size, writers may be losing lines, and a warning says so (at most
    once every :data:`_BACKLOG_EVERY_S` seconds).
    """
    logger = _json_logger(out)
    warned = 0.0
    for count, raw in enumerate(lines):
        if count % 64 == 0 and backlog() >= _PIPE_SIZE * 3 // 4:
            now = time.monotonic()
            if now - warned >= _BACKLOG_EVERY_S:
                warned = now
                note = NativeLine(
                    logging.WARNING,
                    "native log lines arrive faster than they are written; some may be dropped",
                    None,
                    "native.backlog",
                )
                _log(logger, note, department)
        cut = len(raw) > MAX_LINE
        text = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            continue
        line = parse_native_line(text)
        if cut:
            line = NativeLine(line.level, line.message + " [cut]", line.source, line.event)
        _log(logger, line, department)


def _drain_main(department: str) -> int:
    """Entry point of the drain process: stdin is the pipe, stdout the node's stderr."""
    # Ctrl-C and systemd signal the whole group; end only when the node's end closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin = sys.stdin.buffer

    def backlog() -> int:
        waiting = array.array("i", [0])
        try:
            fcntl.ioctl(stdin.fileno(), termios.FIONREAD, waiting)
        except OSError:
            return 0
        return waiting[0]

    with contextlib.suppress(BrokenPipeError):
        drain(_bounded_lines(stdin), sys.stdout, department or None, backlog)
    return 0


def _bounded_lines(stream: object) -> Iterable[bytes]:
    readline = getattr(stream, "readline")  # noqa: B009 -- any binary stream will do
    while True:
        raw = readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            # Skip the rest of an overlong line, keeping its start.
            while True:
                rest = readline(MAX_LINE)
                if not rest or rest.endswith(b"\n"):
                    break
        yield raw


@dataclass
class _Capture:
    original: int
    process: subprocess.Popen[bytes]


#: The capture in force, if any (at most one per process).
_active: list[_Capture] = []


def capture_native_stderr(department: str | None = None) -> TextIO:
    """Send descriptor 2 through the drain process; returns the stream Python should use.

    Call it before the log handler is created: ``sys.stderr`` then writes to
    the original stderr, and the handler with it. Calling it twice is harmless.

    Raises:
        OSError: the pipe or the drain process could not be created.
    """
    if _active:
        return sys.stderr
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # a smaller default pipe only drops lines sooner
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.native_log", department or ""],
            stdin=read_end,
            stdout=original,
            stderr=original,
            close_fds=True,
        )
    except OSError:
        for fd in (read_end, write_end, original):
            os.close(fd)
        raise
    os.close(read_end)
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(
        original, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False
    )
    sys.stderr = stream
    faulthandler.enable(file=stream)
    _active.append(_Capture(original, process))
    return stream


def restore_native_stderr(timeout: float = 2.0) -> None:
    """Point descriptor 2 back at the original stderr; the drain writes what is left and ends."""
    if not _active:
        return
    capture = _active.pop()
    # Replacing descriptor 2 closes the pipe's last write end in this process,
    # so the drain reads end-of-file once it has written everything before it.
    os.dup2(capture.original, 2)
    # Past the timeout a child of the node still holds the pipe; the drain ends with it.
    with contextlib.suppress(subprocess.TimeoutExpired):
        capture.process.wait(timeout)


if __name__ == "__main__":
    sys.exit(_drain_main(sys.argv[1] if len(sys.argv) > 1 else ""))
