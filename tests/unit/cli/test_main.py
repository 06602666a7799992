"""The CLI surface: role-grouped help, one-line errors, documented exit codes."""

from __future__ import annotations

import os
import re
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


def test_status_of_a_stopped_node_says_how_to_start_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "tax"
    assert main(["init", "--home", str(home), "--federation", "city", "--department", "tax"]) == 0
    capsys.readouterr()
    assert main(["status", "--home", str(home)]) == exit_codes.ADMIN
    err = capsys.readouterr().err
    assert "no running node" in err and f"hint: start it with 'fednode serve --home {home}'" in err


def test_status_of_a_folder_without_a_node_blames_home_not_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo-home"
    assert main(["status", "--home", str(typo)]) == exit_codes.ADMIN
    err = capsys.readouterr().err
    assert f"no node in {typo} (no node.toml)" in err
    assert "--home (or $FEDNODE_HOME)" in err and "fednode init" in err
    assert "fednode serve" not in err


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


def _enrolled(tmp_path: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """A CA, a node ``tax`` it issued, and a published directory: (ca, home, directory)."""
    ca, home, out = tmp_path / name, tmp_path / "tax", tmp_path / f"{name}-directory.json"
    assert main(["ca", "init", "--ca", str(ca), "--federation", "city"]) == 0
    if not home.exists():
        assert (
            main(["init", "--home", str(home), "--federation", "city", "--department", "tax"]) == 0
        )
    request, cert = str(home / "request.json"), str(tmp_path / f"{name}-tax.pem")
    assert main(["ca", "issue", "--ca", str(ca), "--request", request, "--out", cert]) == 0
    assert main(["directory", "publish", "--ca", str(ca), "--out", str(out)]) == 0
    return ca, home, out


def test_a_directory_of_another_ca_is_refused_and_the_node_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, home, ours = _enrolled(tmp_path)
    install = ["directory", "install", "--home", str(home), "--ca-cert"]
    assert main([*install, str(ca / "ca.pem"), str(ours)]) == 0
    trusted = (home / "ca.pem").read_bytes()
    # Another authority's directory, with its own CA given: refused before anything changes,
    # so the real directory can still be installed afterwards.
    evil, _, theirs = _enrolled(tmp_path, "evil")
    capsys.readouterr()
    assert main([*install, str(evil / "ca.pem"), str(theirs)]) == exit_codes.IDENTITY
    err = capsys.readouterr().err
    assert f"is not the federation CA this node trusts ({home / 'ca.pem'})" in err
    assert (home / "ca.pem").read_bytes() == trusted
    assert (home / "directory.serial").read_text().strip() == "1"
    # A node's own certificate is not a CA.
    assert main([*install, str(tmp_path / "ca-tax.pem"), str(ours)]) == exit_codes.IDENTITY
    assert "is not a CA certificate" in capsys.readouterr().err


def test_a_mistyped_home_is_not_created_by_directory_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, _, out = _enrolled(tmp_path)
    typo = tmp_path / "taxx"
    code = main(
        ["directory", "install", str(out), "--ca-cert", str(ca / "ca.pem"), "--home", str(typo)]
    )
    assert code == exit_codes.CONFIG
    assert f"no node configuration at {typo / 'node.toml'}" in capsys.readouterr().err
    assert not typo.exists()


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
    assert main([*issue, "--out", str(tmp_path / "2.pem"), "--replace"]) == 0
    replaced = capsys.readouterr().out
    assert "(same keys)" in replaced and "or peers refuse it" in replaced
    published = tmp_path / "directory.json"
    assert main(["directory", "publish", "--ca", str(ca), "--out", str(published)]) == 0
    directory = parse_directory(published.read_bytes(), Authority(ca).ca_certificate())
    assert directory.get("tax").endpoint == "new.example:8443"


@pytest.mark.parametrize(
    ("option", "address"),
    [
        *[
            ("--endpoint", e)
            for e in ("new.example", "new.example:0", "new.example:http", ":7443", "::1:7443",
                      "[::1]", "[nope]:1")
        ],
        *[
            ("--listen", listen)
            for listen in ("localhost", "localhost:localhost", "0.0.0.0:70000", "::7443", "[::]",
                           " :7443")
        ],
    ],
)  # fmt: skip
def test_a_malformed_address_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, address: str
) -> None:
    home = tmp_path / "tax"
    with pytest.raises(SystemExit) as done:
        main(["init", "--home", str(home), "--federation", "city", "--department", "tax",
              option, address])  # fmt: skip
    assert done.value.code == exit_codes.USAGE
    error = capsys.readouterr().err
    assert f"argument {option}" in error
    assert any(why in error for why in ("HOST:PORT", "the port must be", "IPv6"))
    assert not home.exists()


@pytest.mark.parametrize("listen", ["127.0.0.1:9443", "[::]:9443", "localhost:9443"])
def test_a_listen_address_with_a_port_gives_the_endpoint_its_port(
    tmp_path: Path, listen: str
) -> None:
    home = tmp_path / "tax"
    init = ["init", "--home", str(home), "--federation", "city", "--department", "tax"]
    assert main([*init, "--listen", listen]) == 0
    config = (home / "node.toml").read_text()
    assert f'listen = "{listen}"' in config
    assert re.search(r'endpoint = "[^"]+:9443"', config)


def _authority_with_tax(tmp_path: Path) -> tuple[list[str], Path]:
    """A CA that has issued tax its certificate; returns the issue command (without --out)."""
    ca, home = tmp_path / "ca", tmp_path / "tax"
    assert main(["ca", "init", "--ca", str(ca), "--federation", "city"]) == 0
    assert main(["init", "--home", str(home), "--federation", "city", "--department", "tax"]) == 0
    issue = ["ca", "issue", "--ca", str(ca), "--request", str(home / "request.json")]
    assert main([*issue, "--out", str(tmp_path / "tax.pem")]) == 0
    return issue, ca


def _fingerprint(ca: Path) -> str:
    from node.identity.authority import Authority

    return str(Authority(ca).enrolments()["departments"]["tax"]["tls_fingerprint"])


def test_issuing_again_to_an_enrolled_department_is_refused_without_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue, ca = _authority_with_tax(tmp_path)
    enrolled = _fingerprint(ca)
    capsys.readouterr()
    out = tmp_path / "again.pem"
    assert main([*issue, "--out", str(out)]) == exit_codes.IDENTITY
    err = capsys.readouterr().err
    assert "'tax' already holds certificate serial" in err
    assert "carries the enrolled keys" in err and "--replace" in err
    assert "must install the new certificate when the next directory is published" in err
    assert not out.exists() and _fingerprint(ca) == enrolled


def test_a_request_from_another_home_is_named_a_re_enrolment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ca = _authority_with_tax(tmp_path)
    enrolled = _fingerprint(ca)
    other = tmp_path / "other"
    assert main(["init", "--home", str(other), "--federation", "city", "--department", "tax"]) == 0
    capsys.readouterr()
    claim = ["ca", "issue", "--ca", str(ca), "--request", str(other / "request.json")]
    assert main([*claim, "--out", str(tmp_path / "other.pem")]) == exit_codes.IDENTITY
    err = capsys.readouterr().err
    assert "different keys" in err and "re-enrolment" in err and "check with the department" in err
    assert _fingerprint(ca) == enrolled
    assert main([*claim, "--out", str(tmp_path / "other.pem"), "--replace"]) == 0
    assert "new keys: a re-enrolment" in capsys.readouterr().out
    assert _fingerprint(ca) != enrolled


@pytest.mark.parametrize(
    ("out", "says"),
    [("tax.pem", "already exists"), ("missing/tax.pem", "does not exist"), (".", "a directory")],
)
def test_an_unusable_out_is_refused_before_anything_is_issued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, says: str
) -> None:
    issue, ca = _authority_with_tax(tmp_path)
    existing = (tmp_path / "tax.pem").read_bytes()
    enrolled = _fingerprint(ca)
    capsys.readouterr()
    assert main([*issue, "--out", str(tmp_path / out), "--replace"]) == exit_codes.USAGE
    assert says in capsys.readouterr().err
    assert (tmp_path / "tax.pem").read_bytes() == existing
    assert not (tmp_path / "missing").exists()
    assert _fingerprint(ca) == enrolled


def test_a_missing_ca_certificate_is_traced_to_ca_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = tmp_path / "directory.json"
    published.write_text("{}")
    code = main(["directory", "show", str(published), "--ca-cert", str(tmp_path / "missing.pem")])
    assert code == exit_codes.CONFIG
    err = capsys.readouterr().err
    assert "'fednode ca init' creates it" in err and "ca issue" not in err


def test_publishing_below_the_chosen_witness_threshold_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    _enrolled(tmp_path)  # one department: no other log can witness it
    err = capsys.readouterr().err
    assert "warning: witness threshold 0 in this directory, below the chosen 1" in err
    assert "the next directory with 2 witnesses carries 1 again" in err
