"""The systemd unit's kernel filters, applied without systemd: what they refuse, and that
the node's libraries load under them. ``tests/integration/test_demo.py`` runs the whole
demo federation under the same filters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_checks import parse_unit
from unit_sandbox import available, expand_filter

ROOT = Path(__file__).resolve().parents[3]
UNIT_PATH = ROOT / "deploy" / "systemd" / "fednode.service"
UNIT = UNIT_PATH.read_text()
SANDBOX = Path(__file__).resolve().parent / "unit_sandbox.py"

pytestmark = pytest.mark.skipif(
    not available(), reason="needs systemd-analyze and the libseccomp binding (python3-seccomp)"
)

# Each line prints what happened to one thing the unit must refuse or allow.
_PROBE = """
import errno, mmap, os, socket
def attempt(name, fn):
    try:
        fn()
        print(name, "allowed")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
attempt("rwx-mapping", lambda: mmap.mmap(-1, 4096, prot=7))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
attempt("setuid", lambda: os.setuid(os.getuid()))
attempt("tcp", lambda: socket.create_server(("127.0.0.1", 0)).close())
attempt("unix", lambda: socket.socket(socket.AF_UNIX).close())
attempt("rw-mapping", lambda: mmap.mmap(-1, 4096).close())
"""


def _run(unit: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SANDBOX), str(unit), "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _probe(unit: Path) -> dict[str, str]:
    result = _run(unit, sys.executable, "-c", _PROBE)
    assert result.returncode == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())


def test_the_unit_allows_what_a_service_needs_and_not_privileged_calls() -> None:
    allowed = expand_filter(parse_unit(UNIT)["Service"])
    assert allowed is not None
    assert {"openat", "mmap", "socket", "bind", "accept4", "fsync", "rename"} <= allowed
    assert not {"setuid", "reboot", "init_module", "mount", "bpf"} & allowed


def test_the_filters_refuse_what_the_unit_says_and_allow_the_rest() -> None:
    assert _probe(UNIT_PATH) == {
        "rwx-mapping": "EPERM",  # MemoryDenyWriteExecute=yes
        "netlink": "EAFNOSUPPORT",  # RestrictAddressFamilies
        "setuid": "EPERM",  # SystemCallFilter=~@privileged
        "tcp": "allowed",
        "unix": "allowed",
        "rw-mapping": "allowed",
    }


def test_the_filters_come_from_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "fednode.service"
    unit.write_text(
        UNIT.replace("MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no").replace(
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        )
    )
    probed = _probe(unit)
    assert probed["rwx-mapping"] == "allowed"
    assert probed["netlink"] == "allowed"


def test_the_node_and_its_native_libraries_load_under_the_unit() -> None:
    # Every compiled library the node uses is mapped at import: none needs an
    # executable stack or a writable-and-executable page.
    result = _run(
        UNIT_PATH,
        sys.executable,
        "-c",
        "import node.cli.main, node.server.app, node.fl.participant, node.exchange.sink, "
        "flwr.clientapp, pyarrow.parquet, pyarrow.dataset, numpy, grpc, cryptography.hazmat."
        "primitives.hpke, ledger.verify; print('loaded')",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "loaded"
