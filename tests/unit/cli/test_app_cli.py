"""``fednode app``: wrong folders, files and digests are usage errors that name them;
an existing FAB is never overwritten silently; ``app list`` shows whole digests."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli import exit_codes
from node.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "seeds" / "apps" / "traffic-risk"


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "traffic"
    assert (
        main(["init", "--home", str(path), "--federation", "city", "--department", "traffic"]) == 0
    )
    capsys.readouterr()
    return path


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real FAB built from the seed app, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("fab") / "traffic-risk.fab"
    assert main(["app", "build", str(APP), "--out", str(out)]) == 0
    return out


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return err


def test_build_of_a_missing_folder_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    out = tmp_path / "x.fab"
    assert main(["app", "build", str(missing), "--out", str(out)]) == exit_codes.USAGE
    err = _error(capsys)
    assert f"fednode: error: app folder {missing} does not exist" in err
    assert "hint:" in err
    assert not out.exists()


def test_build_of_a_folder_without_pyproject_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    assert main(["app", "build", str(folder), "--out", str(tmp_path / "x.fab")]) == exit_codes.USAGE
    assert f"{folder} is not a Flower app folder" in _error(capsys)


def test_build_of_an_unreadable_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("")
    folder.chmod(0)
    if os.geteuid() == 0:
        # Permissions do not stop root; have the listing fail as it would for anyone else.
        def refuse(path: Path) -> Iterator[Path]:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(Path, "iterdir", refuse)
    try:
        code = main(["app", "build", str(folder), "--out", str(tmp_path / "x.fab")])
    finally:
        folder.chmod(0o755)
    assert code == exit_codes.USAGE
    assert f"cannot read app folder {folder}" in _error(capsys)


def test_build_refuses_an_existing_out_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fab: Path
) -> None:
    out = tmp_path / "traffic-risk.fab"
    out.write_bytes(b"keep me")
    assert main(["app", "build", str(APP), "--out", str(out)]) == exit_codes.USAGE
    err = _error(capsys)
    assert f"{out} already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"

    assert main(["app", "build", str(APP), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() == fab.read_bytes()
    assert f"sha256:{hashlib.sha256(out.read_bytes()).hexdigest()}" in capsys.readouterr().out


def test_build_refuses_an_existing_default_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traffic-risk.fab").write_bytes(b"keep me")
    assert main(["app", "build", str(APP)]) == exit_codes.USAGE
    assert "traffic-risk.fab already exists" in _error(capsys)
    assert (tmp_path / "traffic-risk.fab").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nosuch.fab", r"nosuch\.fab: no such file, and not a SHA-256 digest"),
        ("deadbeef", r"deadbeef: no such file, and not a SHA-256 digest"),
    ],
)
def test_approve_of_a_missing_file_is_a_usage_error_naming_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    target = tmp_path / name
    assert main(["app", "approve", str(target), "--home", str(home)]) == exit_codes.USAGE
    err = _error(capsys)
    assert re.search(message, err), err
    assert main(["app", "list", "--home", str(home)]) == 0
    assert "no approved apps" in capsys.readouterr().out


def test_approve_of_a_folder_is_a_usage_error(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "approve", str(tmp_path), "--home", str(home)]) == exit_codes.USAGE
    assert f"{tmp_path} is a folder, not a FAB file" in _error(capsys)


def test_approve_of_a_file_that_is_not_a_fab_is_a_usage_error(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "accidents.csv"
    data.write_text("id,severity\n1,low\n")
    assert main(["app", "approve", str(data), "--home", str(home)]) == exit_codes.USAGE
    err = _error(capsys)
    assert f"{data} is not a Flower App Bundle (FAB)" in err
    assert "fednode app build FOLDER --out APP.fab" in err


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("deadbeef", r"'deadbeef' is not a FAB SHA-256 \(64 hex characters\)"),
        ("ab" * 32, rf"sha256:{'ab' * 32} is not on this node's approved list"),
        (f"sha256:{'AB' * 32}", rf"sha256:{'ab' * 32} is not on this node's approved list"),
    ],
)
def test_revoke_of_a_digest_never_approved_is_a_usage_error_with_a_hint(
    home: Path, capsys: pytest.CaptureFixture[str], digest: str, message: str
) -> None:
    assert main(["app", "revoke", digest, "--home", str(home)]) == exit_codes.USAGE
    err = _error(capsys)
    assert re.search(message, err), err
    assert "hint: run 'fednode app list'" in err


def test_list_at_80_columns_shows_whole_digests_that_revoke_accepts(
    home: Path, fab: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    digest = hashlib.sha256(fab.read_bytes()).hexdigest()
    bare = "c1" * 32
    assert main(["app", "approve", str(fab), "--home", str(home)]) == 0
    assert main(["app", "approve", bare, "--home", str(home)]) == 0
    capsys.readouterr()

    assert main(["app", "list", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"sha256:{digest}" in out and f"sha256:{bare}" in out
    assert "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "traffic-risk" in out and "(digest only)" in out

    # The digest as printed, copied whole, is what revoke takes.
    printed = re.findall(r"sha256:[0-9a-f]{64}", out)
    assert main(["app", "revoke", printed[0], "--home", str(home)]) == 0
    assert capsys.readouterr().out == f"revoked {printed[0]}\n"
    assert main(["app", "list", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert printed[0] not in out and f"sha256:{bare}" in out
