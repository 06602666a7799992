"""Static checks of deploy/: each returns the problems it finds, so tests can show both ways.

No container engine or cluster runs in CI, so these checks read the files the
way an operations reviewer would: every node runs as non-root with a health
check, keeps keys, data and ledger on volumes of its own, and is reachable only
on the federation port.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FEDERATION_PORT",
    "HEALTH_CHECK_WORST_S",
    "check_compose",
    "check_dockerfile",
    "check_guide",
    "check_k8s",
    "check_systemd",
    "code_lines",
    "fednode_invocations",
    "parse_unit",
]

FEDERATION_PORT = 7443
HOME = "/var/lib/fednode"
HEALTH_SCRIPT = "healthcheck.py"
#: Longest a healthy-or-not answer from deploy/healthcheck.py can take: about 1 s
#: to start Python and import gRPC (0.6-0.8 s measured on an idle core), up to
#: 2 s for the admin socket and up to 5 s for the federation port. A probe with
#: a shorter timeout can fail a node that is merely busy.
HEALTH_CHECK_WORST_S = 8


def _seconds(value: Any) -> float | None:
    """``15``, ``"15s"``, ``"1m"`` or ``"1m30s"`` in seconds; None if absent or unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value or ""))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _timeout_problem(where: str, timeout: Any) -> str | None:
    seconds = _seconds(timeout)
    if seconds is None or seconds < HEALTH_CHECK_WORST_S:
        return (
            f"{where}: health check timeout {timeout!r} is below {HEALTH_CHECK_WORST_S}s, "
            "the longest the check can take"
        )
    return None


def _asks_the_node(command: Any) -> bool:
    """A health command runs the shipped health check, or ``fednode status``."""
    text = " ".join(command) if isinstance(command, list) else str(command)
    return HEALTH_SCRIPT in text or re.search(r"\bfednode\b\W+status\b", text) is not None


_ROOT_USERS = {"", "0", "root", "0:0", "root:root"}


def _stages(text: str) -> list[list[tuple[str, str]]]:
    """Split a Dockerfile into stages of (INSTRUCTION, arguments), joining continuations."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, rest.strip()))
    return stages


def check_dockerfile(text: str) -> list[str]:
    """Problems in a Dockerfile: multi-stage build, non-root user, health check, port."""
    problems: list[str] = []
    stages = _stages(text)
    if len(stages) < 2:
        return [f"Dockerfile must be multi-stage, found {len(stages)} stage(s)"]
    final = stages[-1]
    instructions = [i for i, _ in final]
    users = [args for i, args in final if i == "USER"]
    if not users:
        problems.append("final stage has no USER: the node would run as root")
    elif users[-1].strip() in _ROOT_USERS or users[-1].startswith(("0:", "root")):
        problems.append(f"final stage runs as root (USER {users[-1]})")
    health = [args for i, args in final if i == "HEALTHCHECK"]
    if not health or health[-1].upper().startswith("NONE"):
        problems.append("final stage has no HEALTHCHECK")
    elif "CMD" not in health[-1] or not _asks_the_node(health[-1]):
        problems.append(f"HEALTHCHECK does not ask the node: {health[-1]}")
    elif HEALTH_SCRIPT in health[-1] and not any(
        i == "COPY" and HEALTH_SCRIPT in a for i, a in final
    ):
        problems.append(f"HEALTHCHECK runs {HEALTH_SCRIPT}, which the image never copies")
    if health:
        # Docker's default timeout is 30s; an explicit one must still leave room.
        timeout = re.search(r"--timeout=(\S+)", health[-1])
        problem = _timeout_problem("HEALTHCHECK", timeout.group(1) if timeout else "30s")
        if problem:
            problems.append(problem)
    if not any(i == "COPY" and "--from=" in a for i, a in final):
        problems.append("final stage copies nothing from the build stage")
    if any(i == "RUN" and "pip install" in a for i, a in final):
        problems.append("final stage runs pip install: build tools belong in the build stage")
    exposed = {p.split("/")[0] for i, a in final if i == "EXPOSE" for p in a.split()}
    if exposed != {str(FEDERATION_PORT)}:
        problems.append(f"final stage must expose only {FEDERATION_PORT}, exposes {exposed}")
    if "ENTRYPOINT" not in instructions and "CMD" not in instructions:
        problems.append("final stage has no ENTRYPOINT or CMD")
    return problems


def _mount_target(volume: Any) -> tuple[str, str]:
    """(source, target) of a compose volume in short or long syntax."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume.get("target", ""))
    source, _, rest = str(volume).partition(":")
    return source, rest.split(":")[0]


def check_compose(doc: Any, departments: Iterable[str]) -> list[str]:
    """Problems in docker-compose.yml, given the department ids that must be services."""
    problems: list[str] = []
    services: dict[str, Any] = (doc or {}).get("services") or {}
    declared = set(((doc or {}).get("volumes") or {}).keys())
    missing = set(departments) - set(services)
    if missing:
        problems.append(f"no service for departments {sorted(missing)}")
    owners: dict[str, str] = {}
    for name, svc in services.items():
        where = f"service {name}"
        if str(svc.get("user", "")).strip() in _ROOT_USERS:
            problems.append(f"{where}: must set a non-root user")
        if svc.get("privileged"):
            problems.append(f"{where}: must not be privileged")
        if svc.get("network_mode") == "host":
            problems.append(f"{where}: must not use the host network")
        if svc.get("read_only") is not True:
            problems.append(f"{where}: root filesystem must be read_only")
        if "ALL" not in (svc.get("cap_drop") or []):
            problems.append(f"{where}: must drop ALL capabilities")
        if "no-new-privileges:true" not in (svc.get("security_opt") or []):
            problems.append(f"{where}: must set no-new-privileges")
        test = (svc.get("healthcheck") or {}).get("test")
        if not test or (isinstance(test, list) and test[0] == "NONE") or not _asks_the_node(test):
            problems.append(f"{where}: needs a healthcheck that asks the node")
        else:
            problem = _timeout_problem(where, svc["healthcheck"].get("timeout", "30s"))
            if problem:
                problems.append(problem)
        mounts = dict(_mount_target(v)[::-1] for v in svc.get("volumes") or [])
        for sub in ("keys", "data", "ledger"):
            source = mounts.get(f"{HOME}/{sub}")
            if source is None:
                problems.append(f"{where}: no volume mounted at {HOME}/{sub}")
            elif source not in declared:
                problems.append(f"{where}: {sub} volume {source!r} is not a named volume")
        for target, source in mounts.items():
            if source in declared:
                if source in owners and owners[source] != name:
                    problems.append(f"{where}: volume {source!r} is shared with {owners[source]}")
                owners[source] = name
            if target.startswith(HOME) and source not in declared:
                problems.append(f"{where}: {target} is a bind mount; node state needs a volume")
        for port in svc.get("ports") or []:
            container = str(port).rsplit(":", 1)[-1].split("/")[0]
            if container != str(FEDERATION_PORT):
                problems.append(f"{where}: publishes port {container}, only {FEDERATION_PORT}")
    return problems


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container_ports(pod: dict[str, Any]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for container in pod.get("containers") or []:
        for port in container.get("ports") or []:
            ports[str(port.get("name", port["containerPort"]))] = int(port["containerPort"])
    return ports


def _check_pod(where: str, pod: dict[str, Any], claims: set[str], secrets: set[str]) -> list[str]:
    problems: list[str] = []
    security = pod.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True or security.get("runAsUser") in (None, 0):
        problems.append(f"{where}: pod must set runAsNonRoot and a non-zero runAsUser")
    if pod.get("hostNetwork"):
        problems.append(f"{where}: must not use the host network")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        cwhere = f"{where} container {container.get('name')}"
        csec = container.get("securityContext") or {}
        if csec.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
        if csec.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: root filesystem must be read-only")
        if csec.get("privileged"):
            problems.append(f"{cwhere}: must not be privileged")
        if "ALL" not in ((csec.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{cwhere}: must drop ALL capabilities")
    for container in pod.get("containers") or []:
        cwhere = f"{where} container {container.get('name')}"
        mounted = {m["name"] for m in container.get("volumeMounts") or []}
        home = [m["name"] for m in container.get("volumeMounts") or [] if m["mountPath"] == HOME]
        if not home or home[0] not in claims:
            problems.append(f"{cwhere}: {HOME} (ledger, data) is not on a PersistentVolumeClaim")
        secret_mounts = [
            volumes[m]["secret"].get("secretName")
            for m in mounted
            if m in volumes and "secret" in volumes[m]
        ]
        if not secret_mounts:
            problems.append(f"{cwhere}: mounts no Secret for its keys")
        for name in secret_mounts:
            if name not in secrets:
                problems.append(f"{cwhere}: Secret {name!r} is neither defined nor generated")
        if not any(k in container for k in ("readinessProbe", "livenessProbe")):
            problems.append(f"{cwhere}: has no readiness or liveness probe")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            command = ((probe or {}).get("exec") or {}).get("command")
            if command is None:
                continue
            if not _asks_the_node(command):
                problems.append(f"{cwhere}: probe {command} does not ask the node")
            # Kubernetes enforces exec probe timeouts, and the default is 1 second.
            problem = _timeout_problem(f"{cwhere} {kind}", probe.get("timeoutSeconds", 1))
            if problem:
                problems.append(problem)
        for mount in container.get("volumeMounts") or []:
            is_secret = mount["name"] in volumes and "secret" in volumes[mount["name"]]
            if is_secret and mount.get("readOnly") is not True:
                problems.append(f"{cwhere}: Secret mount {mount['name']} must be readOnly")
    return problems


def _check_policy(where: str, policy: dict[str, Any], port_numbers: set[int]) -> list[str]:
    problems: list[str] = []
    spec = policy.get("spec") or {}
    if "Ingress" not in (spec.get("policyTypes") or []):
        problems.append(f"{where}: policyTypes must include Ingress")
    for rule in spec.get("ingress") or []:
        ports = rule.get("ports")
        if not ports:
            problems.append(f"{where}: an ingress rule opens every port")
            continue
        for port in ports:
            if port.get("protocol", "TCP") != "TCP" or port.get("port") != FEDERATION_PORT:
                problems.append(f"{where}: ingress opens {port}, only TCP {FEDERATION_PORT}")
    if not spec.get("ingress"):
        problems.append(f"{where}: no ingress rule: peers could not reach the node")
    if FEDERATION_PORT not in port_numbers:
        problems.append(f"{where}: selected pods do not listen on {FEDERATION_PORT}")
    for rule in spec.get("egress") or []:
        ports = rule.get("ports")
        if not ports:
            problems.append(f"{where}: an egress rule opens every port")
            continue
        for port in ports:
            number = port.get("port")
            if number == 53:
                selectors = [t.get("podSelector", {}).get("matchLabels", {}) for t in rule["to"]]
                if not all(s.get("k8s-app") == "kube-dns" for s in selectors):
                    problems.append(f"{where}: port 53 egress must go to cluster DNS only")
            elif number != FEDERATION_PORT or port.get("protocol", "TCP") != "TCP":
                problems.append(f"{where}: egress opens {port}")
    return problems


def check_k8s(docs: list[dict[str, Any]], kustomization: dict[str, Any]) -> list[str]:
    """Problems in the k8s manifests, read together with kustomization.yaml."""
    problems: list[str] = []
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc.get("kind", "?"), []).append(doc)
    secret_keys: dict[str, set[str]] = {
        d["metadata"]["name"]: set(d.get("data") or {}) | set(d.get("stringData") or {})
        for d in kinds.get("Secret", [])
    }
    generated = {g["name"]: g for g in kustomization.get("secretGenerator") or []}
    for name, generator in generated.items():
        secret_keys[name] = {f.rsplit("/", 1)[-1] for f in generator.get("files") or []}
    secrets = set(secret_keys)
    services = {d["metadata"]["name"]: d for d in kinds.get("Service", [])}
    policies = kinds.get("NetworkPolicy", [])
    if not kinds.get("StatefulSet"):
        problems.append("no StatefulSet")
    for sts in kinds.get("StatefulSet", []):
        name = sts["metadata"]["name"]
        where = f"StatefulSet {name}"
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels") or {}
        if spec.get("replicas", 1) != 1:
            problems.append(f"{where}: must run exactly one replica (one ledger writer)")
        templates = spec.get("volumeClaimTemplates") or []
        claims = {c["metadata"]["name"] for c in templates}
        if not claims:
            problems.append(f"{where}: has no volumeClaimTemplates (PVC)")
        for claim in templates:
            claim_spec = claim.get("spec") or {}
            # A provisioner cannot fill a volume nobody may write: the claim must bind
            # to a volume made over existing data, so dynamic provisioning stays off.
            if "ReadOnlyMany" in (claim_spec.get("accessModes") or []) and (
                claim_spec.get("storageClassName") != ""
            ):
                problems.append(
                    f"{where}: ReadOnlyMany claim {claim['metadata']['name']!r} needs "
                    'storageClassName: "" to bind to an existing volume, not a new empty one'
                )
        problems += _check_pod(where, pod, claims, secrets)
        for volume in pod.get("volumes") or []:
            secret = str((volume.get("secret") or {}).get("secretName"))
            keys = secret_keys.get(secret)
            for item in (volume.get("secret") or {}).get("items") or []:
                if keys is not None and item["key"] not in keys:
                    problems.append(f"{where}: Secret {secret} has no key {item['key']}")
        ports = _container_ports(pod)
        service = services.get(spec.get("serviceName", ""))
        if service is None:
            problems.append(f"{where}: serviceName {spec.get('serviceName')!r} has no Service")
        else:
            if not _labels_match(service["spec"].get("selector") or {}, labels):
                problems.append(f"{where}: Service selector does not match the pod labels")
            for port in service["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if target not in ports and target not in ports.values():
                    problems.append(f"{where}: Service targetPort {target} is not a container port")
                if port.get("port") != FEDERATION_PORT:
                    problems.append(f"{where}: Service exposes {port.get('port')}")
        selecting = [
            p
            for p in policies
            if _labels_match(p["spec"]["podSelector"].get("matchLabels") or {}, labels)
        ]
        if not selecting:
            problems.append(f"{where}: no NetworkPolicy selects its pods")
        for policy in selecting:
            problems += _check_policy(
                f"NetworkPolicy {policy['metadata']['name']}", policy, set(ports.values())
            )
    for generator in generated.values():
        files = {f.rsplit("/", 1)[-1] for f in generator.get("files") or []}
        for key in ("tls.key", "signing.key", "hpke.key"):
            if key not in files:
                problems.append(f"secretGenerator {generator['name']}: missing {key}")
    return problems


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse a systemd unit into sections of (key, value), keeping repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


_REQUIRED_HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ReadWritePaths": HOME,
}


def check_systemd(text: str) -> list[str]:
    """Problems in the systemd unit: hardening keys, user, and what it starts."""
    sections = parse_unit(text)
    service = sections.get("Service")
    if service is None:
        return ["unit has no [Service] section"]
    values: dict[str, str] = {}
    for key, value in service:
        values[key] = value
    problems = [
        f"[Service] {key}={values.get(key)!r}, want {want!r}"
        for key, want in _REQUIRED_HARDENING.items()
        if values.get(key) != want
    ]
    if values.get("User", "root") in _ROOT_USERS:
        problems.append("[Service] must run as a dedicated non-root User")
    if not any(k == "SystemCallFilter" for k, _ in service):
        problems.append("[Service] has no SystemCallFilter")
    argv = shlex.split(values.get("ExecStart", ""))
    if len(argv) < 2 or not argv[0].endswith("/fednode") or argv[1] != "serve":
        problems.append(f"[Service] ExecStart must run 'fednode serve', got {argv}")
    if "Install" not in sections:
        problems.append("unit has no [Install] section")
    for key, value in sections.get("Unit", []):
        if key.startswith("ConditionPath"):
            problems.append(
                f"[Unit] {key}={value} skips the unit and 'systemctl start' reports success; "
                f"use Assert{key.removeprefix('Condition')} so a missing file fails the start"
            )
    return problems


def code_lines(markdown: str) -> list[list[str]]:
    """The fenced code blocks of a Markdown text, each as its command lines.

    A line ending in a backslash is joined with the next, as the shell would.
    """
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for raw in markdown.splitlines():
        if raw.strip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
            continue
        if current is None:
            continue
        if current and current[-1].endswith("\\"):
            current[-1] = current[-1][:-1].rstrip() + " " + raw.strip()
        else:
            current.append(raw.strip())
    return blocks


#: Commands whose output the node process writes itself, not the shell that typed them.
_NODE_WRITES = re.compile(r"\bfednode\b.*\b(?:ledger\s+export|share\s+fetch)\b.*--out[ =](\S+)")
#: Where a path is someone else's: a container's or a pod's file system.
_IN_CONTAINER = re.compile(r"^(?:docker|kubectl)\b")


def check_guide(markdown: str, unit_text: str) -> list[str]:
    """Problems in deploy/README.md's host commands, read against the systemd unit.

    * the node writes ``--out`` of ``ledger export`` and ``share fetch``
      inside the unit's sandbox, so the path must be under a ReadWritePaths
      entry, and not in the node's private /tmp or the hidden /home and /root;
    * a command naming the node's home runs as the node's account, or it can
      leave files there the node cannot use;
    * ``sudo -u fednode fednode`` needs ``fednode`` on sudo's secure_path;
    * installing a backup over an SQLite database first removes the old
      ``-wal`` and ``-shm`` files, which SQLite would otherwise replay into it.
    """
    service = dict(parse_unit(unit_text).get("Service", []))
    writable = [p.lstrip("-+") for p in service.get("ReadWritePaths", "").split()]
    problems: list[str] = []
    linked = re.search(r"ln -s\S* /opt/fednode/bin/fednode /usr/(?:local/)?bin", markdown)
    for block in code_lines(markdown):
        for index, line in enumerate(block):
            if not line or line.startswith("#") or _IN_CONTAINER.match(line):
                continue
            out = _NODE_WRITES.search(line)
            if out is not None:
                path = out.group(1)
                if not path.startswith("/"):
                    problems.append(
                        f"{line!r}: --out {path} is relative to wherever it is typed, and "
                        "the node must be able to write there: give a path under "
                        f"{' or '.join(writable)}"
                    )
                elif path.startswith(("/tmp/", "/home/", "/root/")) or not any(
                    path == w or path.startswith(w.rstrip("/") + "/") for w in writable
                ):
                    problems.append(
                        f"{line!r}: the node cannot write {path} under the unit's sandbox "
                        f"(ReadWritePaths={' '.join(writable)})"
                    )
            if f"--home {HOME}" in line and not line.startswith("sudo -u fednode "):
                problems.append(f"{line!r}: run it as the node's account (sudo -u fednode)")
            if line.startswith("sudo -u fednode fednode ") and not linked:
                problems.append(
                    f"{line!r}: sudo cannot find 'fednode' unless the guide links "
                    "/opt/fednode/bin/fednode into /usr/local/bin"
                )
            restored = re.search(r"^install\b.*\s(\S+\.(?:sqlite|db))$", line)
            if restored is not None:
                db = restored.group(1)
                earlier = " ".join(block[:index])
                for suffix in ("-wal", "-shm"):
                    if f"{db}{suffix}" not in earlier or "rm " not in earlier:
                        problems.append(
                            f"{line!r}: remove {db}{suffix} first, or SQLite replays the old "
                            "journal into the restored database"
                        )
    return problems


_SUBSTITUTION = re.compile(r"\$\([^)]*\)|\$\{[^}]*\}|\$\w+")


def fednode_invocations(line: str, groups: Iterable[str]) -> list[list[str]]:
    """The argument lists ``line`` passes to ``fednode`` (after the program name).

    Finds ``fednode GROUP ...`` and ``/opt/fednode/bin/fednode GROUP ...`` (so
    ``sudo -u fednode fednode status`` is one call, to ``status``), and
    ``docker compose run [OPTIONS] SERVICE ARGS``, whose entrypoint is
    ``fednode`` unless ``--entrypoint`` replaces it. Shell substitutions become
    one placeholder word, and ``#`` comments are dropped.
    """
    known = set(groups)
    try:
        words = shlex.split(_SUBSTITUTION.sub("X", line), comments=True)
    except ValueError:
        return []
    calls: list[list[str]] = []
    if words[:3] == ["docker", "compose", "run"] and "--entrypoint" not in words:
        rest = words[3:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        if len(rest) > 1:
            calls.append(rest[1:])
    for index, word in enumerate(words[:-1]):
        if (word == "fednode" or word.endswith("/bin/fednode")) and words[index + 1] in known:
            call = words[index + 1 :]
            for separator in ("&&", "||", ";", "|"):
                if separator in call:
                    call = call[: call.index(separator)]
            calls.append(call)
    return calls
