"""deploy/ read statically: the shipped files pass, and each check catches the mistake it names."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_checks import (
    check_compose,
    check_dockerfile,
    check_guide,
    check_k8s,
    check_systemd,
    code_lines,
    parse_unit,
)

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
UNIT = (DEPLOY / "systemd" / "fednode.service").read_text()
GUIDE = (DEPLOY / "README.md").read_text()
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
FEDERATION = tomllib.loads((ROOT / "seeds" / "federation.toml").read_text())
COORDINATOR = FEDERATION["federation"]["coordinator"]


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in KUSTOMIZATION["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


K8S_DOCS = _k8s_docs()
COMPOSE_DEPARTMENTS = [s for s in COMPOSE["services"] if s != COORDINATOR]


# --- the shipped files ------------------------------------------------------


def test_dockerfile_passes() -> None:
    assert check_dockerfile(DOCKERFILE) == []


def test_compose_has_three_departments_and_the_coordinator_and_passes() -> None:
    assert COORDINATOR in COMPOSE["services"]
    assert len(COMPOSE_DEPARTMENTS) >= 3
    known = {d["id"] for d in FEDERATION["departments"]}
    assert set(COMPOSE["services"]) <= known, "compose services must be federation departments"
    assert check_compose(COMPOSE, [COORDINATOR, *COMPOSE_DEPARTMENTS]) == []


def test_k8s_covers_every_compose_node_and_passes() -> None:
    statefulsets = {d["metadata"]["name"] for d in K8S_DOCS if d["kind"] == "StatefulSet"}
    assert statefulsets == set(COMPOSE["services"])
    assert all(d["metadata"].get("namespace", "fednode") == "fednode" for d in K8S_DOCS)
    assert check_k8s(K8S_DOCS, KUSTOMIZATION) == []


def test_kustomize_inputs_are_never_committed() -> None:
    ignore = (K8S / "identity" / ".gitignore").read_text().split()
    assert "*" in ignore
    assert not any(p.suffix == ".key" for p in (K8S / "identity").rglob("*"))


def test_compose_hand_over_folders_are_never_committed() -> None:
    # ./enrolment/<dept> receives share outputs and ledger bundles from the containers.
    sources = {
        str(v).split(":")[0]
        for svc in COMPOSE["services"].values()
        for v in svc["volumes"]
        if str(v).startswith("./enrolment/")
    }
    assert sources == {f"./enrolment/{name}" for name in COMPOSE["services"]}
    ignore = (DEPLOY / "enrolment" / ".gitignore").read_text().split()
    assert "*" in ignore
    assert [p.name for p in (DEPLOY / "enrolment").iterdir()] == [".gitignore"]


def test_guide_commands_pass() -> None:
    assert check_guide(GUIDE, UNIT) == []


def test_systemd_unit_passes() -> None:
    assert check_systemd(UNIT) == []


def test_every_yaml_file_in_deploy_parses() -> None:
    for path in DEPLOY.rglob("*.y*ml"):
        list(yaml.safe_load_all(path.read_text()))


# --- each check can fail ----------------------------------------------------


def _drop_lines(text: str, startswith: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(startswith))


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: t.replace("USER 10001:10001", "USER root"), "runs as root"),
        (lambda t: _drop_lines(t, "USER"), "no USER"),
        (
            lambda t: t.replace("HEALTHCHECK --interval", "#HEALTHCHECK --interval"),
            "no HEALTHCHECK",
        ),
        (lambda t: t[t.index("FROM ${PYTHON_IMAGE} AS runtime") :], "multi-stage"),
        (lambda t: t.replace("COPY --from=build", "COPY"), "copies nothing from the build"),
        (lambda t: _drop_lines(t, "COPY deploy/healthcheck.py"), "never copies"),
        (lambda t: t.replace('"/opt/fednode/healthcheck.py"', '"-c", "pass"'), "does not ask"),
        (lambda t: t.replace("EXPOSE 7443", "EXPOSE 7443 22"), "expose only 7443"),
        (lambda t: t + "\nRUN pip install debugpy\n", "runs pip install"),
        (lambda t: t.replace("--timeout=15s", "--timeout=2s"), "timeout '2s' is below"),
    ],
)
def test_dockerfile_mistakes_are_caught(mutate: Any, problem: str) -> None:
    problems = check_dockerfile(mutate(DOCKERFILE))
    assert any(problem in p for p in problems), problems


def _service(doc: dict[str, Any], name: str = "traffic") -> dict[str, Any]:
    service: dict[str, Any] = doc["services"][name]
    return service


def _without_mount(doc: dict[str, Any], target: str) -> None:
    svc = _service(doc)
    svc["volumes"] = [v for v in svc["volumes"] if not v.endswith(target)]


def _share_keys(doc: dict[str, Any]) -> None:
    svc = _service(doc)
    svc["volumes"] = [
        v.replace("traffic-keys", "civil-affairs-keys") if "keys" in v else v
        for v in svc["volumes"]
    ]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: _service(d).update(user="0"), "non-root user"),
        (lambda d: _service(d).pop("user"), "non-root user"),
        (lambda d: _service(d).pop("healthcheck"), "healthcheck"),
        (lambda d: _service(d).update(healthcheck={"test": ["NONE"]}), "healthcheck"),
        (lambda d: _service(d).update(healthcheck={"test": ["CMD", "true"]}), "healthcheck"),
        (lambda d: _service(d).update(read_only=False), "read_only"),
        (lambda d: _service(d).update(privileged=True), "privileged"),
        (lambda d: _service(d).update(network_mode="host"), "host network"),
        (lambda d: _service(d).update(cap_drop=[]), "drop ALL"),
        (lambda d: _service(d).update(security_opt=[]), "no-new-privileges"),
        (lambda d: _without_mount(d, "/var/lib/fednode/keys"), "/var/lib/fednode/keys"),
        (lambda d: _without_mount(d, "/var/lib/fednode/ledger"), "/var/lib/fednode/ledger"),
        (lambda d: _without_mount(d, "/var/lib/fednode/data"), "/var/lib/fednode/data"),
        (_share_keys, "shared with"),
        (lambda d: _service(d)["ports"].append("2222:22"), "publishes port 22"),
        (lambda d: d["services"].pop("traffic"), "no service for departments"),
        (lambda d: _service(d)["healthcheck"].update(timeout="1s"), "timeout '1s' is below"),
    ],
)
def test_compose_mistakes_are_caught(mutate: Any, problem: str) -> None:
    doc = copy.deepcopy(COMPOSE)
    mutate(doc)
    problems = check_compose(doc, [COORDINATOR, *COMPOSE_DEPARTMENTS])
    assert any(problem in p for p in problems), problems


def _find(docs: list[dict[str, Any]], kind: str, name: str = "traffic") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = _find(docs, "StatefulSet")["spec"]["template"]["spec"]
    return pod


def _main(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(docs)["containers"][0]
    return container


def _ingress_port(docs: list[dict[str, Any]], port: int) -> None:
    _find(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"].append({"port": port})


def _unmount(docs: list[dict[str, Any]], *volumes: str) -> None:
    mounts = [m for m in _main(docs)["volumeMounts"] if m["name"] not in volumes]
    _main(docs)["volumeMounts"] = mounts


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: _find(d, "StatefulSet")["spec"].pop("volumeClaimTemplates"), "PVC"),
        (lambda d: _unmount(d, "home"), "is not on a PersistentVolumeClaim"),
        (lambda d: _unmount(d, "identity", "certificate", "node-config"), "mounts no Secret"),
        (lambda d: _pod(d)["volumes"][0]["secret"].update(secretName="nope"), "neither defined"),
        (lambda d: _pod(d)["securityContext"].update(runAsUser=0), "runAsNonRoot"),
        (lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (
            lambda d: _main(d)["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (lambda d: _main(d).pop("readinessProbe") and _main(d).pop("livenessProbe"), "probe"),
        (lambda d: _main(d).update(livenessProbe={"exec": {"command": ["true"]}}), "ask the node"),
        (lambda d: _ingress_port(d, 22), "only TCP 7443"),
        (lambda d: _find(d, "NetworkPolicy")["spec"]["ingress"][0].pop("ports"), "every port"),
        (
            lambda d: _find(d, "NetworkPolicy")["spec"]["egress"][0]["ports"].append({"port": 443}),
            "egress opens",
        ),
        (
            lambda d: _find(d, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].update(
                {"fednode/department": "other"}
            ),
            "no NetworkPolicy selects",
        ),
        (lambda d: _find(d, "Service")["spec"]["ports"][0].update(targetPort=8080), "targetPort"),
        (
            lambda d: _find(d, "Service")["spec"]["selector"].update({"fednode/department": "x"}),
            "selector",
        ),
        (lambda d: _find(d, "StatefulSet")["spec"].update(replicas=3), "exactly one replica"),
        (lambda d: _main(d)["ports"][0].update(containerPort=9000), "do not listen on 7443"),
        (lambda d: _main(d)["startupProbe"].pop("timeoutSeconds"), "startupProbe: health check"),
        (lambda d: _main(d)["livenessProbe"].update(timeoutSeconds=2), "livenessProbe: health"),
        (
            lambda d: _find(d, "StatefulSet")["spec"]["volumeClaimTemplates"][1]["spec"].pop(
                "storageClassName"
            ),
            "ReadOnlyMany claim 'datasets'",
        ),
    ],
)
def test_k8s_mistakes_are_caught(mutate: Any, problem: str) -> None:
    docs = copy.deepcopy(K8S_DOCS)
    mutate(docs)
    problems = check_k8s(docs, KUSTOMIZATION)
    assert any(problem in p for p in problems), problems


def test_a_secret_generator_without_the_hpke_key_is_caught() -> None:
    kustomization = copy.deepcopy(KUSTOMIZATION)
    generator = kustomization["secretGenerator"][1]
    generator["files"] = [f for f in generator["files"] if not f.endswith("hpke.key")]
    problems = check_k8s(K8S_DOCS, kustomization)
    assert any("missing hpke.key" in p for p in problems), problems
    assert any("has no key hpke.key" in p for p in problems), problems


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: _drop_lines(t, "NoNewPrivileges"), "NoNewPrivileges"),
        (lambda t: t.replace("ProtectSystem=strict", "ProtectSystem=full"), "ProtectSystem"),
        (lambda t: _drop_lines(t, "PrivateTmp"), "PrivateTmp"),
        (
            lambda t: t.replace("CapabilityBoundingSet=", "CapabilityBoundingSet=CAP_NET_ADMIN"),
            "CapabilityBoundingSet",
        ),
        (
            lambda t: t.replace("AF_UNIX AF_INET AF_INET6", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
            "RestrictAddressFamilies",
        ),
        (lambda t: t.replace("User=fednode", "User=root"), "non-root User"),
        (lambda t: _drop_lines(t, "SystemCallFilter"), "SystemCallFilter"),
        (lambda t: t.replace("fednode serve", "fednode status"), "ExecStart"),
        (
            lambda t: t.replace("ReadWritePaths=/var/lib/fednode", "ReadWritePaths=/"),
            "ReadWritePaths",
        ),
        (lambda t: t.replace("AssertPathExists", "ConditionPathExists"), "use AssertPathExists"),
    ],
)
def test_systemd_mistakes_are_caught(mutate: Any, problem: str) -> None:
    problems = check_systemd(mutate(UNIT))
    assert any(problem in p for p in problems), problems


_EXPORT = "--out /var/lib/fednode/exports/$bundle"
_LEDGER = "/var/lib/fednode/ledger/ledger.sqlite"
_RESTORE_RM = f"rm -f {_LEDGER}-wal {_LEDGER}-shm\n"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        # The node, not the shell, writes the bundle: /backup is read-only to it.
        (lambda t: t.replace(_EXPORT, "--out /backup/traffic/$bundle"), "cannot write /backup"),
        # Its /tmp is private: the operator would never see the file.
        (lambda t: t.replace(_EXPORT, "--out /tmp/$bundle"), "cannot write /tmp/"),
        (lambda t: t.replace(_EXPORT, "--out $bundle"), "is relative"),
        (
            lambda t: t.replace("sudo -u fednode fednode ledger fsck", "fednode ledger fsck"),
            "run it as the node's account",
        ),
        (
            lambda t: t.replace("ln -s /opt/fednode/bin/fednode /usr/local/bin/fednode", ""),
            "sudo cannot find 'fednode'",
        ),
        (lambda t: t.replace(_RESTORE_RM, ""), "remove /var/lib/fednode/ledger/ledger.sqlite-wal"),
    ],
)
def test_guide_mistakes_are_caught(mutate: Any, problem: str) -> None:
    mutated = mutate(GUIDE)
    assert mutated != GUIDE, "the mutation no longer matches the guide"
    problems = check_guide(mutated, UNIT)
    assert any(problem in p for p in problems), problems


def test_guide_commands_are_read_the_way_the_shell_reads_them() -> None:
    blocks = code_lines("text\n```\na \\\n  --b c\n# note\n```\n`inline`\n```\nd\n```\n")
    assert blocks == [["a --b c", "# note"], ["d"]]


def test_a_narrower_sandbox_makes_the_guide_wrong() -> None:
    unit = UNIT.replace("ReadWritePaths=/var/lib/fednode", "ReadWritePaths=/var/lib/fednode/ledger")
    assert any("cannot write /var/lib/fednode/exports" in p for p in check_guide(GUIDE, unit))


def test_unit_parser_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a unit file line"):
        parse_unit("[Service]\nthis is not a key value line\n")


# --- the real tools, where this machine has them ------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # Point ExecStart at a binary that exists here; systemd checks that it does.
    unit = tmp_path / "fednode.service"
    unit.write_text(UNIT.replace("/opt/fednode/bin/fednode", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt directives are only warnings to systemd; here they fail.
    assert "Unknown" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_manifests_and_the_output_passes(tmp_path: Path) -> None:
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    for generator in KUSTOMIZATION["secretGenerator"]:
        for name in generator["files"]:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text("placeholder\n")
    (work / "identity" / "directory.json").write_text("{}\n")
    built = subprocess.run(
        ["kubectl", "kustomize", str(work)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Secret") == kinds.count("StatefulSet") == len(COMPOSE["services"])
    # The generated Secrets now exist as objects, so check without the generator.
    assert check_k8s(docs, {}) == []
    secret = next(d for d in docs if d["kind"] == "Secret")
    del secret["data"]["hpke.key"]
    assert any("has no key hpke.key" in p for p in check_k8s(docs, {}))
