"""deploy/healthcheck.py: healthy only when the admin socket answers and the port accepts."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from node.config import render_config

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "healthcheck.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


def _home(tmp_path: Path, listen: str) -> Path:
    # A short path: Unix socket paths are limited to about 100 bytes.
    home = tmp_path / "h"
    home.mkdir()
    (home / "node.toml").write_text(
        render_config(federation="city", department="traffic", display_name="Traffic",
                      listen=listen, endpoint="traffic.example:7443")
    )  # fmt: skip
    return home


@pytest.fixture
def port_listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


@pytest.fixture
def admin_socket(tmp_path: Path) -> Iterator[Path]:
    """A gRPC server on HOME/admin.sock: the same interface the node's admin socket offers."""
    home = tmp_path / "h"
    home.mkdir()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_insecure_port(f"unix:{home / 'admin.sock'}")
    server.start()
    try:
        yield home
    finally:
        server.stop(0)


def test_no_configuration_is_unhealthy(tmp_path: Path) -> None:
    assert "no node configuration" in healthcheck.check(tmp_path)


def test_no_running_node_is_unhealthy(tmp_path: Path) -> None:
    home = _home(tmp_path, "0.0.0.0:7443")
    assert "no node answers on" in healthcheck.check(home)


def test_admin_socket_without_the_federation_port_is_unhealthy(admin_socket: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = int(probe.getsockname()[1])
    (admin_socket / "node.toml").write_text(
        render_config(federation="city", department="traffic", display_name="Traffic",
                      listen=f"0.0.0.0:{closed}", endpoint="traffic.example:7443")
    )  # fmt: skip
    assert "does not accept connections" in healthcheck.check(admin_socket, timeout=2)


def test_admin_socket_and_open_port_are_healthy(admin_socket: Path, port_listener: int) -> None:
    (admin_socket / "node.toml").write_text(
        render_config(federation="city", department="traffic", display_name="Traffic",
                      listen=f"0.0.0.0:{port_listener}", endpoint="traffic.example:7443")
    )  # fmt: skip
    assert healthcheck.check(admin_socket) is None


def test_the_script_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"FEDNODE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: no node configuration")
    assert len(result.stderr.strip().splitlines()) == 1
