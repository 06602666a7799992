"""The CLI surface: role-grouped help, one-line errors, documented exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import exit_codes
from node.cli.main import main
from node.timefmt import utc_text


def test_help_groups_commands_by_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for role in ("federation authority", "department operator", "coordinator", "auditor"):
        assert role in out
    for group in ("ca", "directory", "init", "serve", "status", "fl", "ledger", "demo"):
        assert f"  {group}" in out


def test_missing_config_prints_one_line_and_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--home", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == exit_codes.CONFIG
    lines = err.strip().splitlines()
    assert lines[0].startswith("fednode: error: no node configuration")
    assert lines[1].startswith("hint: run 'fednode init")
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--debug", "--home", str(tmp_path / "nowhere")])
    assert code == exit_codes.CONFIG
    assert "Traceback" in capsys.readouterr().err


def test_status_without_running_node_is_an_admin_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--home", str(tmp_path)]) == exit_codes.ADMIN
    assert "no running node" in capsys.readouterr().err


def test_init_then_init_again_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["init", "--home", str(tmp_path / "n"), "--federation", "city", "--department", "tax"]
    assert main(args) == 0
    assert (tmp_path / "n" / "keys" / "hpke.key").stat().st_mode & 0o777 == 0o600
    assert main(args) == exit_codes.CONFIG
    assert "already holds a node" in capsys.readouterr().err


def test_authority_commands_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = str(tmp_path / "ca")
    home = tmp_path / "tax"
    assert main(["ca", "init", "--ca", ca, "--federation", "city"]) == 0
    assert main(["init", "--home", str(home), "--federation", "city", "--department", "tax"]) == 0
    assert (
        main(
            [
                "ca",
                "issue",
                "--ca",
                ca,
                "--request",
                str(home / "request.json"),
                "--out",
                str(home / "tls" / "node.pem"),
            ]
        )
        == 0
    )
    out = tmp_path / "directory.json"
    assert main(["directory", "publish", "--ca", ca, "--out", str(out)]) == 0
    assert (
        main(["directory", "install", str(out), "--ca-cert", f"{ca}/ca.pem", "--home", str(home)])
        == 0
    )
    assert (home / "directory.serial").read_text().strip() == "1"
    assert main(["directory", "show", str(out), "--ca-cert", f"{ca}/ca.pem"]) == 0
    assert "tax" in capsys.readouterr().out


@pytest.mark.parametrize("days", ["0", "-1", "soon"])
def test_a_validity_under_one_day_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    out = tmp_path / "directory.json"
    with pytest.raises(SystemExit) as done:
        main(["directory", "publish", "--ca", str(tmp_path), "--out", str(out), "--days", days])
    assert done.value.code == exit_codes.USAGE
    assert "argument --days" in capsys.readouterr().err
    assert not out.exists()


def test_times_in_messages_are_utc_text() -> None:
    assert utc_text(1_798_675_200) == "2026-12-31 00:00:00 UTC"
    assert utc_text(None) == "unknown"


def test_a_reader_that_goes_away_is_not_an_error(tmp_path: Path) -> None:
    """`fednode ... | head`: the closed pipe ends the command quietly, exit 0."""
    command = [sys.executable, "-m", "node.cli.main"]
    authority = str(tmp_path / "ca")
    subprocess.run([*command, "ca", "init", "--ca", authority, "--federation", "city"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    listing = subprocess.Popen(
        [*command, "ca", "list", "--ca", authority],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # the reader is gone before the first line is written
    err = listing.stderr.read()
    assert listing.wait(timeout=60) == 0, err
    assert "internal error" not in err and "Traceback" not in err


def test_the_serving_node_is_read_from_its_pid_file_only_while_it_lives(tmp_path: Path) -> None:
    from node.cli.fl import _serving_pid

    pid_file = tmp_path / "node.pid"
    assert _serving_pid(pid_file) is None
    pid_file.write_text(f"{os.getpid()}\n")
    assert _serving_pid(pid_file) == os.getpid()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          check=True, capture_output=True, text=True, timeout=60)  # fmt: skip
    pid_file.write_text(gone.stdout)
    assert _serving_pid(pid_file) is None


def test_an_endpoint_change_goes_through_the_authority_with_the_same_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.identity.authority import Authority
    from node.identity.directory import parse_directory
    from node.identity.enrolment import parse_request

    ca, home = tmp_path / "ca", tmp_path / "tax"
    assert main(["ca", "init", "--ca", str(ca), "--federation", "city"]) == 0
    init = ["init", "--home", str(home), "--federation", "city", "--department", "tax"]
    assert main([*init, "--endpoint", "old.example:7443"]) == 0
    first = parse_request((home / "request.json").read_bytes())
    issue = ["ca", "issue", "--ca", str(ca), "--request", str(home / "request.json")]
    assert main([*issue, "--out", str(tmp_path / "1.pem")]) == 0
    capsys.readouterr()

    assert main(["request", "--endpoint", "new.example:8443", "--home", str(home)]) == 0
    told = capsys.readouterr().out
    assert "tax at new.example:8443" in told and 'endpoint = "new.example:8443"' in told
    second = parse_request((home / "request.json").read_bytes())  # verifies its signatures
    assert second.endpoint == "new.example:8443"
    assert second.ed25519_public == first.ed25519_public
    assert second.hpke_public == first.hpke_public
    assert second.csr.public_key() == first.csr.public_key()
    # The authority re-issues from it, and the next directory carries the new address.
    assert main([*issue, "--out", str(tmp_path / "2.pem")]) == 0
    published = tmp_path / "directory.json"
    assert main(["directory", "publish", "--ca", str(ca), "--out", str(published)]) == 0
    directory = parse_directory(published.read_bytes(), Authority(ca).ca_certificate())
    assert directory.get("tax").endpoint == "new.example:8443"


@pytest.mark.parametrize("endpoint", ["new.example", "new.example:0", "new.example:http", ":7443"])
def test_a_malformed_endpoint_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    home = tmp_path / "tax"
    with pytest.raises(SystemExit) as done:
        main(["init", "--home", str(home), "--federation", "city", "--department", "tax",
              "--endpoint", endpoint])  # fmt: skip
    assert done.value.code == exit_codes.USAGE
    error = capsys.readouterr().err
    assert "argument --endpoint" in error and ("HOST:PORT" in error or "the port must be" in error)
    assert not home.exists()
