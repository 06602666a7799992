"""What ``fednode serve`` finds at ``<home>/admin.sock`` before it binds: only a dead socket is
removed; a symlink, a file or a folder there is refused and left alone; a path too long
for a Unix socket is refused with a hint, not a gRPC bind error."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.server.app import _check_socket_path, _clear_stale_socket


@pytest.fixture
def home() -> Iterator[Path]:
    # A short folder: a Unix socket path may have at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="fns-"))
    yield path
    shutil.rmtree(path)


def _symlink_to_file(home: Path, path: Path) -> Path:
    target = home / "precious.txt"
    target.write_text("keep me")
    path.symlink_to(target)
    return target


def _dangling_symlink(home: Path, path: Path) -> Path:
    path.symlink_to(home / "nowhere.sock")
    return home / "nowhere.sock"


def _regular_file(home: Path, path: Path) -> Path:
    path.write_text("keep me")
    return path


def _folder(home: Path, path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (_symlink_to_file, "is a symlink"),
        (_dangling_symlink, "is a symlink"),
        (_regular_file, "is not a socket"),
        (_folder, "is not a socket"),
    ],
)
def test_anything_but_a_socket_at_the_path_is_refused_and_left_alone(
    home: Path, plant: Callable[[Path, Path], Path], message: str
) -> None:
    path = home / "admin.sock"
    kept = plant(home, path)
    before = os.lstat(path)
    with pytest.raises(ConfigError, match=message):
        _clear_stale_socket(home, path)
    assert os.lstat(path) == before
    if kept.exists() and kept.is_file():
        assert kept.read_text() == "keep me"


def test_a_socket_nobody_answers_on_is_removed(home: Path) -> None:
    path = home / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_behind:
        left_behind.bind(str(path))  # bound, never listening: a crashed node's socket
    _clear_stale_socket(home, path)
    assert not os.path.lexists(path)


def test_no_socket_is_nothing_to_do(home: Path) -> None:
    _clear_stale_socket(home, home / "admin.sock")


@pytest.mark.parametrize(
    ("length", "refused"),
    [(100, False), (107, False), (108, True), (300, True)],
)
def test_a_socket_path_too_long_for_the_kernel_is_refused_with_a_hint(
    length: int, refused: bool
) -> None:
    path = Path("/" + "h" * (length - len("/admin.sock") - 1) + "/admin.sock")
    assert len(str(path)) == length
    if refused:
        with pytest.raises(ConfigError, match=r"at most 107") as raised:
            _check_socket_path(path)
        assert "shorter path" in (raised.value.hint or "")
    else:
        _check_socket_path(path)
