"""Ctrl-C in a command is never lost, and it cancels the node's admin call."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from node import interrupt
from node.admin.client import invoke
from node.cli import main as cli
from protocols.fednode.v1 import admin_pb2, admin_pb2_grpc


def _sigint_soon(after: float) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


class _EndlessCommand(admin_pb2_grpc.AdminServicer):
    """Streams progress until its caller goes away, as a long share does."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def Invoke(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        context.add_callback(self.cancelled.set)
        deadline = time.monotonic() + 30
        while context.is_active() and time.monotonic() < deadline:
            yield admin_pb2.AdminEvent(progress_json=b'{"event": "progress"}')
            time.sleep(0.05)


@pytest.fixture
def endless(tmp_path: Path) -> Iterator[tuple[Path, _EndlessCommand]]:
    servicer = _EndlessCommand()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{tmp_path / 'admin.sock'}")
    server.start()
    yield tmp_path, servicer
    server.stop(None)


def test_ctrl_c_during_an_admin_call_cancels_it_at_the_node(
    endless: tuple[Path, _EndlessCommand],
) -> None:
    home, servicer = endless
    with interrupt.handling():
        timer = _sigint_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            invoke(home, "share.fetch", {})
        timer.join()
        assert interrupt.interrupted()
    assert servicer.cancelled.wait(5), "the node never saw the call end"
    assert not interrupt.interrupted()  # cleared once the command is over


def test_an_interrupt_swallowed_mid_call_still_ends_it(
    endless: tuple[Path, _EndlessCommand],
) -> None:
    """Library code that eats the KeyboardInterrupt cannot keep the command running."""
    home, servicer = endless
    seen: list[int] = []

    def swallowing(event: dict[str, Any]) -> None:
        seen.append(1)
        if len(seen) == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the handler runs here, and its exception is lost
            except KeyboardInterrupt:
                pass

    with interrupt.handling(), pytest.raises(KeyboardInterrupt):
        invoke(home, "share.fetch", {}, on_event=swallowing)
    assert servicer.cancelled.wait(5)


def test_an_interrupt_swallowed_while_loading_ends_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = cli.build_parser

    def build_parser_eating_the_interrupt() -> Any:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        except KeyboardInterrupt:
            pass  # a library with a bare except, say
        return real()

    monkeypatch.setattr(cli, "build_parser", build_parser_eating_the_interrupt)
    # Without the check this would go on to ask a node that is not there (exit 8).
    assert cli.main(["status", "--home", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_the_previous_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interrupt.handling():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_hooks_run_once_registered_and_not_after() -> None:
    calls: list[str] = []
    with interrupt.handling():
        with interrupt.on_interrupt(lambda: calls.append("a")), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        with interrupt.on_interrupt(lambda: calls.append("late")):
            pass  # the flag is set: a hook registered now runs at once
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert calls == ["a", "late"]
