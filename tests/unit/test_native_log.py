"""Native stderr lines (gRPC core) become JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap

import pytest

from node.native_log import MAX_LINE, drain, parse_native_line

HANDSHAKE = (
    "I1129 06:57:11.096913   16188 ssl_transport_security.cc:2563] Handshake failed with error "
    "SSL_ERROR_SSL: error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE"
)


@pytest.mark.parametrize(
    ("line", "level", "event", "source", "message"),
    [
        (HANDSHAKE, logging.WARNING, "tls.handshake_failed", "ssl_transport_security.cc:2563",
         HANDSHAKE.split("] ", 1)[1]),
        ("E1129 07:01:02.000001    42 chttp2_transport.cc:1234] keepalive watchdog timeout",
         logging.ERROR, "grpc.core", "chttp2_transport.cc:1234", "keepalive watchdog timeout"),
        ("W0101 00:00:00.5 7 src/core/lib/iomgr/ev_epoll1.cc:9] slow poll",
         logging.WARNING, "grpc.core", "src/core/lib/iomgr/ev_epoll1.cc:9", "slow poll"),
        ("something a library printed", logging.WARNING, "native.stderr", None,
         "something a library printed"),
        ("I1129 no prefix after all", logging.WARNING, "native.stderr", None,
         "I1129 no prefix after all"),
    ],
)  # fmt: skip
def test_lines_are_classified(
    line: str, level: int, event: str, source: str | None, message: str
) -> None:
    parsed = parse_native_line(line)
    assert (parsed.level, parsed.event, parsed.source, parsed.message) == (
        level,
        event,
        source,
        message,
    )


CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from node.logs import configure_logging
    from node.native_log import capture_native_stderr, restore_native_stderr
    capture_native_stderr("health")
    configure_logging("INFO", department="health")
    logging.getLogger("fednode.test").info("python line")
    os.write(2, HANDSHAKE.encode() + b"\\n")
    os.write(2, b"plain native text\\n")
    restore_native_stderr()
    os.write(2, b"after restore\\n")
    """
)


def test_native_writes_become_json_lines_and_python_logs_stay_direct() -> None:
    script = f"HANDSHAKE = {HANDSHAKE!r}\n" + CHILD
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    # Everything before the restore is JSON; what is written after it goes out untouched.
    assert lines[-1] == "after restore"
    records = [json.loads(line) for line in lines[:-1]]
    events = {r.get("event"): r for r in records}
    assert records[0]["msg"] == "python line"
    handshake = events["tls.handshake_failed"]
    assert handshake["logger"] == "grpc"
    assert handshake["level"] == "WARNING"
    assert handshake["department"] == "health"
    assert handshake["source"] == "ssl_transport_security.cc:2563"
    assert events["native.stderr"]["msg"] == "plain native text"


FATAL = textwrap.dedent(
    """
    import os
    from node.native_log import capture_native_stderr
    capture_native_stderr("health")
    os.write(2, b"F1129 07:00:00.000001    42 chttp2_transport.cc:99] last words before abort\\n")
    os.write(2, b"Fatal Python error: a native crash\\n")
    os.abort()
    """
)


def test_the_last_words_of_a_crashing_node_reach_the_log() -> None:
    """What the process writes just before it dies is in the pipe; the drain, a process
    of its own, still writes it out."""
    done = subprocess.run(
        [sys.executable, "-c", FATAL], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    by_message = {r["msg"]: r for r in records}
    assert by_message["last words before abort"]["level"] == "CRITICAL"
    assert by_message["Fatal Python error: a native crash"]["event"] == "native.stderr"


def test_drain_cuts_overlong_lines_and_warns_of_a_backlog() -> None:
    out = io.StringIO()
    lines = [b"x" * (MAX_LINE + 10) + b"\n", b"I0101 00:00:00.1 1 a.cc:1] fine\n"]
    drain(lines, out, "tax", backlog=lambda: 1 << 30)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["native.backlog", "native.stderr", "grpc.core"]
    assert records[1]["msg"].endswith(" [cut]") and len(records[1]["msg"]) < MAX_LINE + 10
    assert all(r["department"] == "tax" for r in records)
