"""The network lab itself: isolation, addressing, link cuts, and teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from netns import Lab, LabError, LabFactory, sweep_orphans

pytestmark = pytest.mark.multihost

_SERVER = textwrap.dedent(
    """
    import socket, sys
    s = socket.create_server((sys.argv[1], 9999))
    print("ready", flush=True)
    conn, peer = s.accept()
    conn.sendall(peer[0].encode())
    conn.close()
    """
)
_CLIENT = textwrap.dedent(
    """
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], 9999), timeout=float(sys.argv[2])) as c:
            print(c.recv(64).decode())
    except OSError as e:
        print(f"failed: {e}")
        sys.exit(3)
    """
)


def _serve(lab: Lab, dept: str) -> None:
    server = lab.popen(dept, [sys.executable, "-c", _SERVER, lab.address(dept)],
                       stdout=-1, text=True)  # fmt: skip
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"


def test_departments_reach_each_other_by_their_own_addresses(make_lab: LabFactory) -> None:
    lab = make_lab(["alpha", "beta"])
    _serve(lab, "beta")
    result = lab.run("alpha", [sys.executable, "-c", _CLIENT, lab.address("beta"), "5"])
    # The server saw alpha's lab address, so traffic really crossed the bridge.
    assert result.stdout.strip() == lab.address("alpha"), result.stderr


def test_a_cut_link_drops_traffic_and_restore_brings_it_back(make_lab: LabFactory) -> None:
    lab = make_lab(["alpha", "beta"])
    _serve(lab, "beta")
    lab.cut("beta")
    cut = lab.run("alpha", [sys.executable, "-c", _CLIENT, lab.address("beta"), "1"])
    assert cut.returncode == 3
    assert "timed out" in cut.stdout
    lab.restore("beta")
    again = lab.run("alpha", [sys.executable, "-c", _CLIENT, lab.address("beta"), "5"])
    assert again.stdout.strip() == lab.address("alpha")


def _host_namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_the_host_network_is_untouched(make_lab: LabFactory) -> None:
    before = subprocess.run(
        ["ip", "-o", "link"], check=False, capture_output=True, text=True
    ).stdout
    make_lab(["alpha", "beta"])
    after = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True, text=True).stdout
    host_addresses = subprocess.run(
        ["ip", "-o", "addr"], check=False, capture_output=True, text=True
    ).stdout
    assert before == after
    assert "10.77.0." not in host_addresses


def test_two_labs_coexist_and_close_removes_every_namespace(make_lab: LabFactory) -> None:
    first, second = make_lab(["alpha", "beta"]), make_lab(["alpha", "beta"])
    assert first.prefix != second.prefix
    assert first.address("alpha") == second.address("alpha")
    first.close()
    assert not first.exists()
    assert second.exists()


def test_a_failed_build_leaves_nothing_behind(make_lab: LabFactory) -> None:
    before = _host_namespaces()
    with pytest.raises(LabError, match="unique"):
        make_lab(["alpha", "alpha"])
    # The kernel refuses a namespace name with a slash half-way through the build.
    with pytest.raises(LabError, match="failed"):
        make_lab(["alpha", "x/y"])
    assert _host_namespaces() == before


def test_unknown_department_is_a_clear_error(make_lab: LabFactory) -> None:
    lab = make_lab(["alpha"])
    with pytest.raises(KeyError, match="gamma"):
        lab.address("gamma")


def test_a_lab_left_by_a_killed_run_is_swept_and_live_labs_are_not(make_lab: LabFactory) -> None:
    live = make_lab(["alpha"])
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    orphan = f"fn{dead_pid}xabcdef-alpha"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    try:
        assert orphan in sweep_orphans()
        assert orphan not in _host_namespaces()
        assert live.exists()
    finally:
        subprocess.run(["ip", "netns", "del", orphan], check=False, capture_output=True)
