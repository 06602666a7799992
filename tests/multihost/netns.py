"""A small network lab: each department in its own Linux network namespace.

Layout of one :class:`Lab`::

    namespace <prefix>-sw        bridge "br0" with address 10.77.0.1/24
      ├── port "p1" ──veth── namespace <prefix>-<dept1>: "eth0" 10.77.0.11/24
      ├── port "p2" ──veth── namespace <prefix>-<dept2>: "eth0" 10.77.0.12/24
      └── ...

Every interface is created directly inside a namespace that this lab owns,
and the bridge lives in the lab's own switch namespace, so the host's network
is never touched and labs running in parallel cannot collide: the only global
names are the namespace names, which carry a random prefix.

Invariant: :meth:`Lab.close` deletes every namespace the lab created, even if
creation failed half-way; deleting a namespace destroys its veth ends too.
Namespace names carry the creating process id, so a lab left behind by a
test run that was killed outright is swept by the next run
(:func:`sweep_orphans`), while labs of runs still alive are left alone.
Processes started inside a namespace are the caller's to stop (see
:meth:`Lab.popen`, which records them so :meth:`Lab.close` can stop them first).
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Lab",
    "LabError",
    "LabFactory",
    "lab",
    "skip_reason",
    "sweep_orphans",
    "unavailable_reason",
]

SUBNET = "10.77.0"
_SWITCH_ADDRESS = f"{SUBNET}.1"
_FIRST_HOST = 11


class LabError(RuntimeError):
    """An ``ip`` command failed while building or changing the lab."""


def skip_reason() -> str | None:
    """Why network-namespace tests cannot run here, or None if they can.

    Returns:
        A sentence for ``pytest.skip``, or None.
    """
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (run 'make multihost' as root)"
    probe = f"fnprobe-{secrets.token_hex(3)}"
    created = subprocess.run(
        ["ip", "netns", "add", probe], check=False, capture_output=True, text=True
    )
    if created.returncode != 0:
        return f"cannot create a network namespace: {created.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True)
    return None


_PREFIX = re.compile(r"^fn(\d+)x[0-9a-f]{6}-")


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> list[str]:
    """Delete lab namespaces whose creating process no longer exists.

    Returns:
        The names of the namespaces deleted.
    """
    swept = []
    for ns in _namespaces():
        match = _PREFIX.match(ns)
        if match and not _alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
            swept.append(ns)
    return swept


@functools.cache
def unavailable_reason() -> str | None:
    """Why labs cannot be built here (computed once per process), or None.

    When labs can be built, this also sweeps labs left by killed earlier runs.
    """
    reason = skip_reason()
    if reason is None:
        sweep_orphans()
    return reason


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class Lab:
    """A switch namespace plus one namespace per department, joined by veth pairs.

    Attributes:
        prefix: The random prefix of every namespace name.
        departments: Department ids, in the order their addresses were given.
    """

    prefix: str
    departments: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @classmethod
    def create(cls, departments: Sequence[str]) -> Lab:
        """Build the lab. On any failure, everything built so far is torn down.

        Args:
            departments: Department ids; each gets a namespace and an address.

        Returns:
            The running lab.

        Raises:
            LabError: An ``ip`` command failed.
        """
        new = cls(prefix=f"fn{os.getpid()}x{secrets.token_hex(3)}")
        try:
            new._build(list(departments))
        except BaseException:
            new.close()
            raise
        return new

    def _build(self, departments: list[str]) -> None:
        if len(set(departments)) != len(departments):
            raise LabError(f"department ids must be unique, got {departments}")
        switch = self.switch
        self._add_namespace(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "addr", "add", f"{_SWITCH_ADDRESS}/24", "dev", "br0")
        _ip("-n", switch, "link", "set", "br0", "up")
        for number, dept in enumerate(departments, start=1):
            ns = self._name(dept)
            self._add_namespace(ns)
            self.departments.append(dept)
            port = f"p{number}"
            # Both ends are born inside lab namespaces, so no host name is ever taken.
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", switch)  # fmt: skip
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(dept)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def _name(self, dept: str) -> str:
        return f"{self.prefix}-{dept}"

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)

    @property
    def switch(self) -> str:
        """The name of the switch namespace that holds the bridge."""
        return f"{self.prefix}-sw"

    def namespace(self, dept: str) -> str:
        """The namespace of ``dept``.

        Raises:
            KeyError: ``dept`` is not in this lab.
        """
        if dept not in self.departments:
            raise KeyError(f"department {dept!r} is not in lab {self.prefix}")
        return self._name(dept)

    def address(self, dept: str) -> str:
        """The IPv4 address of ``dept`` inside the lab.

        Raises:
            KeyError: ``dept`` is not in this lab.
        """
        self.namespace(dept)
        return f"{SUBNET}.{_FIRST_HOST + self.departments.index(dept)}"

    def _port(self, dept: str) -> str:
        return f"p{self.departments.index(dept) + 1}"

    def argv(self, dept: str, command: Sequence[str]) -> list[str]:
        """The argv that runs ``command`` inside ``dept``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(dept), *command]

    def run(
        self, dept: str, command: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside ``dept``'s namespace and wait for it (text mode)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.argv(dept, command), text=True, check=False, **kwargs)

    def popen(self, dept: str, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``command`` inside ``dept``'s namespace; :meth:`close` stops it if running."""
        process = subprocess.Popen(self.argv(dept, command), **kwargs)
        self._processes.append(process)
        return process

    def cut(self, dept: str) -> None:
        """Take ``dept``'s switch port down: its packets are silently lost, as with a cut cable."""
        _ip("-n", self.switch, "link", "set", self._port(dept), "down")

    def restore(self, dept: str) -> None:
        """Bring ``dept``'s switch port back up."""
        _ip("-n", self.switch, "link", "set", self._port(dept), "up")

    def close(self) -> None:
        """Stop recorded processes, then delete every namespace this lab created."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._processes.clear()
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self._namespaces.clear()

    def exists(self) -> bool:
        """True while any of the lab's namespaces still exists."""
        return any(ns.startswith(f"{self.prefix}-") for ns in _namespaces())


@contextmanager
def lab(departments: Sequence[str]) -> Iterator[Lab]:
    """Build a :class:`Lab` for the duration of a ``with`` block; always torn down."""
    built = Lab.create(departments)
    try:
        yield built
    finally:
        built.close()


#: Builds a lab for a list of department ids (the ``make_lab`` fixture).
LabFactory = Callable[[Sequence[str]], Lab]
