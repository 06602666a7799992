"""Every fednode command deploy/ names is one the CLI accepts, flags included.

The manifests and the guide are read for each ``fednode`` invocation (the
image's CMD, Compose commands, the k8s containers and init container, the
systemd ExecStart, the health probes, and every command in deploy/README.md)
and each is parsed by the real argument parser, without running it.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_checks import code_lines, fednode_invocations, parse_unit

from node.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PARSER = build_parser()
GROUPS = sorted(next(a for a in PARSER._actions if a.dest == "group").choices or {})


def _parse_error(argv: list[str]) -> str | None:
    """The parser's complaint about ``argv``, or None if it accepts it."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit:
            return stderr.getvalue().strip().splitlines()[-1]
    if getattr(args, "handler", None) is None:
        return "names a group but no command"
    return None


def _manifest_calls() -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entry = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    cmd = [line for line in dockerfile.splitlines() if line.startswith("CMD")]
    assert yaml.safe_load(entry[-1].split(None, 1)[1]) == ["fednode"]
    calls.append(("Dockerfile CMD", yaml.safe_load(cmd[-1].split(None, 1)[1])))
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        calls.append((f"compose {name}", list(service["command"])))
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "StatefulSet":
                continue
            pod: dict[str, Any] = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                calls.append((f"{path.name} {container['name']}", list(container["args"])))
            for container in pod.get("initContainers", []):
                where = f"{path.name} init {container['name']}"
                command = list(container.get("command", []))
                if command[:1] == ["fednode"]:
                    calls.append((where, command[1:] + list(container.get("args", []))))
                    continue
                script = " ".join(container.get("args", []))
                calls += [(where, call) for call in fednode_invocations(script, GROUPS)]
    unit = dict(parse_unit((DEPLOY / "systemd" / "fednode.service").read_text())["Service"])
    calls += [("systemd ExecStart", c) for c in fednode_invocations(unit["ExecStart"], GROUPS)]
    return calls


def _guide_calls() -> list[tuple[str, list[str]]]:
    guide = (DEPLOY / "README.md").read_text()
    return [
        (line, call)
        for block in code_lines(guide)
        for line in block
        for call in fednode_invocations(line, GROUPS)
    ]


MANIFEST_CALLS = _manifest_calls()
GUIDE_CALLS = _guide_calls()


def test_the_commands_were_found() -> None:
    # If the readers stopped finding commands, every test below would pass vacuously.
    assert {where.split()[0] for where, _ in MANIFEST_CALLS} >= {
        "Dockerfile",
        "compose",
        "systemd",
        "traffic.yaml",
    }
    assert any("init" in where for where, _ in MANIFEST_CALLS)
    assert len(GUIDE_CALLS) >= 20
    assert {call[0] for _, call in GUIDE_CALLS} >= {"ca", "directory", "init", "ledger", "status"}


@pytest.mark.parametrize(("where", "argv"), MANIFEST_CALLS, ids=[w for w, _ in MANIFEST_CALLS])
def test_manifest_commands_parse(where: str, argv: list[str]) -> None:
    assert _parse_error(argv) is None, f"{where}: fednode {shlex.join(argv)}"


@pytest.mark.parametrize(
    ("line", "argv"), GUIDE_CALLS, ids=[str(i) for i in range(len(GUIDE_CALLS))]
)
def test_guide_commands_parse(line: str, argv: list[str]) -> None:
    assert _parse_error(argv) is None, line


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--homedir", "/var/lib/fednode"],
        ["directory", "install"],
        ["ledger", "export", "--home", "/h"],
        ["ledger"],
        ["status", "--watch"],
    ],
)
def test_a_wrong_command_is_caught(argv: list[str]) -> None:
    assert _parse_error(argv) is not None


def test_the_directory_init_container_fails_on_a_bad_directory_but_not_an_older_one() -> None:
    # An older serial on the ConfigMap is normal (a newer one was installed by hand);
    # a directory that fails verification must stop the pod, not be shrugged off.
    found = 0
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "StatefulSet":
                continue
            for container in doc["spec"]["template"]["spec"].get("initContainers", []):
                argv = list(container.get("command", [])) + list(container.get("args", []))
                if "install" not in argv:
                    continue
                found += 1
                assert argv[:3] == ["fednode", "directory", "install"], path.name
                assert "--if-newer" in argv, path.name
                assert not any("||" in part for part in argv), path.name
    assert found >= 4
