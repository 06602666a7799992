"""Run a command under the seccomp filters a systemd unit asks for, without systemd.

    python unit_sandbox.py deploy/systemd/fednode.service -- fednode demo --workdir /tmp/d

No systemd runs as PID 1 in CI, so ``systemd-analyze verify`` can only read
the unit. This applies the same kernel filters systemd would, to the command
and every process it starts (seccomp filters are inherited and survive exec):

* ``SystemCallFilter=`` lines: an allow list, then ``~`` lines removing from
  it; groups such as ``@system-service`` are expanded by ``systemd-analyze
  syscall-filter``, so they match what this systemd version would allow;
  anything else fails with ``SystemCallErrorNumber=`` (EPERM by default);
* ``MemoryDenyWriteExecute=yes``: no mapping both writable and executable,
  and no page made executable later, as systemd's own filter does;
* ``RestrictAddressFamilies=``: ``socket()`` of any other family fails with
  EAFNOSUPPORT.

The mount-namespace options (ProtectSystem, PrivateTmp, ...) are not applied.

It needs the libseccomp Python binding (Debian: python3-seccomp) and
``systemd-analyze``; :func:`available` says whether this machine has both.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["available", "expand_filter", "main"]

# The Debian binding is built for the system Python; it loads into the same minor version.
_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
_PROT_WRITE, _PROT_EXEC = 0x2, 0x4
_SHM_EXEC = 0o100000
_FAMILIES = {name: int(getattr(socket, name)) for name in dir(socket) if name.startswith("AF_")}
_AF_MAX = 46


def _seccomp() -> ModuleType | None:
    # The system folder is on the path only for this import, so that nothing
    # else a test imports later can come from it.
    added = _DIST_PACKAGES not in sys.path
    if added:
        sys.path.append(_DIST_PACKAGES)
    try:
        return importlib.import_module("seccomp")
    except ImportError:
        return None
    finally:
        if added:
            sys.path.remove(_DIST_PACKAGES)


def available() -> bool:
    """Whether this machine can apply the filters (libseccomp binding and systemd-analyze)."""
    return shutil.which("systemd-analyze") is not None and _seccomp() is not None


def _groups() -> dict[str, list[str]]:
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        item = line.strip()
        if not item:
            continue
        if not line[0].isspace():
            current = groups.setdefault(item, []) if item.startswith("@") else None
        elif current is not None and not item.startswith("#"):
            current.append(item)
    return groups


def _expand(name: str, groups: dict[str, list[str]], into: set[str]) -> set[str]:
    if name.startswith("@"):
        for item in groups[name]:
            _expand(item, groups, into)
    else:
        into.add(name)
    return into


def expand_filter(service: list[tuple[str, str]]) -> set[str] | None:
    """The system calls a [Service] section's ``SystemCallFilter=`` lines allow.

    None when the section sets no filter. Only an allow list (first line
    without ``~``) followed by ``~`` removals is supported, as the unit uses.

    Raises:
        ValueError: the first filter line is a deny list.
    """
    lines = [value for key, value in service if key == "SystemCallFilter"]
    if not lines:
        return None
    if lines[0].startswith("~"):
        raise ValueError("a deny-list-first SystemCallFilter is not supported")
    groups = _groups()
    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names: set[str] = set()
        for name in line.lstrip("~").split():
            _expand(name, groups, names)
        allowed = allowed - names if deny else allowed | names
    return allowed


def _apply(service: list[tuple[str, str]]) -> None:
    seccomp: Any = _seccomp()
    values = dict(service)
    # First the conditional rules (default allow), then the allow list, which
    # must come last: once it is loaded, seccomp() itself may be refused.
    extra = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    if values.get("MemoryDenyWriteExecute") == "yes":
        deny = seccomp.ERRNO(errno.EPERM)
        both = _PROT_WRITE | _PROT_EXEC
        extra.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
        for call in ("mprotect", "pkey_mprotect"):
            extra.add_rule(deny, call, seccomp.Arg(2, seccomp.MASKED_EQ, _PROT_EXEC, _PROT_EXEC))
        extra.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, _SHM_EXEC, _SHM_EXEC))
    if "RestrictAddressFamilies" in values:
        keep = {_FAMILIES[name] for name in values["RestrictAddressFamilies"].split()}
        for family in sorted(set(range(_AF_MAX)) - keep):
            extra.add_rule(
                seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family)
            )
    extra.load()
    allowed = expand_filter(service)
    if allowed is None:
        return
    number = getattr(errno, values.get("SystemCallErrorNumber", "EPERM"))
    allow_list = seccomp.SyscallFilter(defaction=seccomp.ERRNO(number))
    for name in sorted(allowed):
        # A name this kernel or libseccomp does not know is skipped, as systemd skips it.
        with contextlib.suppress(RuntimeError, ValueError):
            allow_list.add_rule(seccomp.ALLOW, name)
    allow_list.load()


def main(argv: list[str]) -> int:
    """``unit_sandbox.py UNIT -- COMMAND...``: exec COMMAND under UNIT's filters."""
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from deploy_checks import parse_unit

    service = parse_unit(Path(argv[0]).read_text()).get("Service", [])
    _apply(service)
    os.execvp(argv[2], argv[2:])
    return 1  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
