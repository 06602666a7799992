"""The coordinator's job file (``JOB.toml``).

Example::

    [job]
    name = "traffic-risk"                 # optional; prefixes the job id
    app = "../apps/traffic-risk"          # an app directory or a .fab, relative to this file
    rounds = 5                            # sets the app's run-config key num-server-rounds
    output = "results/traffic-risk"       # results directory, relative to this file
    secagg = false                        # run secaggplus_mod at every participant

    [job.timeouts]                        # seconds
    message = 120                         # deadline of one message round trip
    start = 30                            # deadline of StartJob at each participant
    node-wait = 10                        # how long the strategy may wait for lost nodes
    idle = 300                            # a participant that hears nothing of the job
                                          # this long ends it (coordinator gone)

    [strategy]                            # strategy parameters the app reads from its run config
    fraction-train = 1.0
    min-nodes = 3

    [run-config]                          # any other run-config overrides
    learning-rate = 0.5

    [dp]                                  # present = client-side DP (Flower's LocalDpMod)
    clipping-norm = 1.0
    sensitivity = 1.0
    epsilon = 5.0
    delta = 1e-5

    [[participants]]
    department = "transport"
    dataset = "incidents"
    agreement = "agr-5f1c9e0b7a3d4e2f8c6b1a0d9e8f7a6b"

A Flower App chooses its strategy in its ServerApp, so the job influences it
the standard Flower way: through run config keys the app declares in
``[tool.flwr.app.config]``. ``[strategy]``, ``[run-config]`` and ``rounds``
are all run-config overrides; a key the app does not declare is an error.

Every timeout is a positive, finite number of seconds. ``idle`` bounds how long
a participant keeps a job whose coordinator died without ending it: while the
job runs, the coordinator tells each participant it is still there every
quarter of ``idle`` (at most every 30 s), and a participant that hears nothing
of the job for ``idle`` seconds ends it and records ``fl.ended`` with outcome
``error`` and the reason. The default, 300, leaves room for a coordinator
that is busy or briefly cut off; shorter limits free resources sooner.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from node.agreements.document import is_agreement_id
from node.catalog.registry import is_dataset_name
from node.errors import brief
from node.fl.errors import JobFileError, WireError
from node.fl.wire import DpConfig

__all__ = [
    "DEFAULT_IDLE_LIMIT",
    "JobFile",
    "ParticipantSpec",
    "dp_config",
    "load_job_file",
    "parse_job",
]


#: Default idle limit (seconds) of a job at its participants.
DEFAULT_IDLE_LIMIT = 300.0


@dataclass(frozen=True)
class ParticipantSpec:
    department: str
    dataset: str
    agreement: str


@dataclass(frozen=True)
class JobFile:
    """A parsed, validated job file (paths resolved against its directory)."""

    name: str
    app: Path
    output: Path
    participants: tuple[ParticipantSpec, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    secagg: bool = False
    dp: DpConfig | None = None
    message_timeout: float = 120.0
    start_timeout: float = 30.0
    node_wait_timeout: float = 10.0
    #: Seconds a participant keeps the job without word from the coordinator.
    idle_limit: float = DEFAULT_IDLE_LIMIT
    #: Where each run-config override was set: ``[strategy]``, ``[run-config]``
    #: or ``[job].rounds``, so an error about a key can point at the line to fix.
    sources: dict[str, str] = field(default_factory=dict)
    #: The job file this was read from (``None`` for a document parsed in memory).
    path: Path | None = None

    def where(self, key: str) -> str:
        """``FILE: [table].key``, naming where an override was set, for error messages."""
        place = self.sources.get(key, f"[run-config].{key}")
        return f"{self.path}: {place}" if self.path else place


_HINT = "see 'fednode fl launch --help' for the job file format"
# The keys each table may hold; [strategy] and [run-config] are the app's own,
# checked against its declared run config when the job starts.
_TOP_KEYS = frozenset({"job", "strategy", "run-config", "dp", "participants"})
_JOB_KEYS = frozenset({"name", "app", "rounds", "output", "secagg", "timeouts"})
_TIMEOUT_KEYS = frozenset({"message", "start", "node-wait", "idle"})
_DP_KEYS = frozenset({"clipping-norm", "sensitivity", "epsilon", "delta"})
_PARTICIPANT_KEYS = frozenset({"department", "dataset", "agreement"})


def _known(table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse a key the format does not have: a misspelt ``secagg`` or ``rounds``
    would otherwise run the job without what the coordinator asked for.

    Raises:
        JobFileError: naming the key and the nearest valid one.
    """
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            raise JobFileError(
                f"{where} has no key {brief(key)}"
                + (f"; did you mean {near[0]!r}?" if near else ""),
                hint=f"{where} takes {', '.join(sorted(allowed))}; {_HINT}",
            )


def _check_minimums(overrides: dict[str, Any], sources: dict[str, str], participants: int) -> None:
    """Refuse a strategy minimum node count above the participants: nodes cannot
    join a running job, so the strategy would wait for them until it times out.

    Raises:
        JobFileError: naming the key.
    """
    for key, value in overrides.items():
        named_minimum = key.startswith("min-") and key.endswith(("nodes", "clients"))
        count = value if isinstance(value, int) and not isinstance(value, bool) else 0
        if named_minimum and count > participants:
            raise JobFileError(
                f"{sources.get(key, key)} = {value} is more than the job's "
                f"{participants} participant(s)",
                hint=f"set {key} to {participants} or fewer, or add [[participants]]",
            )


def dp_config(d: dict[str, Any]) -> DpConfig:
    """The ``[dp]`` table as DP settings; ``sensitivity`` defaults to ``clipping-norm``.

    Raises:
        JobFileError: a value is missing, not a number, or out of range.
    """
    _known(d, _DP_KEYS, "[dp]")
    clipping_norm = _number(d, "clipping-norm", 0, "[dp]")
    try:
        return DpConfig(
            clipping_norm=clipping_norm,
            sensitivity=_number(d, "sensitivity", clipping_norm, "[dp]"),
            epsilon=_number(d, "epsilon", 0, "[dp]"),
            delta=_number(d, "delta", 0, "[dp]"),
        )
    except WireError as e:
        raise JobFileError(f"[dp] settings rejected: {e}", hint=_HINT) from e


def _table(doc: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise JobFileError(f"job file has no [{key}] table", hint=_HINT)
        return {}
    if not isinstance(value, dict):
        raise JobFileError(f"[{key}] must be a table", hint=_HINT)
    return value


def _number(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise JobFileError(f"{where}.{key} must be a positive number, got {value!r}", hint=_HINT)
    return float(value)


def _text(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise JobFileError(f"{where} needs a non-empty string '{key}'", hint=_HINT)
    return value.strip()


def parse_job(doc: dict[str, Any], base: Path) -> JobFile:
    """Validate a job document; relative paths are resolved against ``base``.

    Raises:
        JobFileError: a required field is missing or any field has the wrong type.
    """
    _known(doc, _TOP_KEYS, "the job file")
    job = _table(doc, "job", required=True)
    _known(job, _JOB_KEYS, "[job]")
    app = base / _text(job, "app", "[job]")
    output = base / str(job.get("output", "fl-results"))
    name = str(job.get("name", app.stem))
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source in ("strategy", "run-config"):
        for key, value in _table(doc, source).items():
            if isinstance(value, dict | list):
                raise JobFileError(f"[{source}].{key} must be a scalar", hint=_HINT)
            overrides[key] = value
            sources[key] = f"[{source}].{key}"
    if "rounds" in job:
        rounds = job["rounds"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise JobFileError(
                f"[job].rounds must be a positive integer, got {brief(rounds)}",
                hint="set rounds = 1 or more (it sets the app's num-server-rounds)",
            )
        overrides["num-server-rounds"] = rounds
        sources["num-server-rounds"] = "[job].rounds (num-server-rounds)"
    secagg = job.get("secagg", False)
    if not isinstance(secagg, bool):
        raise JobFileError("[job].secagg must be true or false", hint=_HINT)
    dp = dp_config(_table(doc, "dp")) if "dp" in doc else None
    raw_participants = doc.get("participants")
    if not isinstance(raw_participants, list) or not raw_participants:
        raise JobFileError("job file lists no [[participants]]", hint=_HINT)
    participants: list[ParticipantSpec] = []
    for index, entry in enumerate(raw_participants):
        if not isinstance(entry, dict):
            raise JobFileError(f"participants[{index}] must be a table", hint=_HINT)
        where = f"participants[{index}]"
        _known(entry, _PARTICIPANT_KEYS, where)
        participant = ParticipantSpec(
            _text(entry, "department", where),
            _text(entry, "dataset", where),
            _text(entry, "agreement", where),
        )
        if not is_agreement_id(participant.agreement):
            raise JobFileError(
                f"{where}.agreement {brief(participant.agreement)} is not an agreement id",
                hint="ids look like agr- and 32 hex digits; 'fednode agreement list' shows them",
            )
        if not is_dataset_name(participant.dataset):
            raise JobFileError(
                f"{where}.dataset {brief(participant.dataset)} is not a dataset name",
                hint="use the name the participant catalogued it under ('fednode dataset list')",
            )
        participants.append(participant)
    departments = [p.department for p in participants]
    if len(set(departments)) != len(departments):
        raise JobFileError("a department is listed twice in [[participants]]", hint=_HINT)
    _check_minimums(overrides, sources, len(participants))
    timeouts = _table(job, "timeouts")
    _known(timeouts, _TIMEOUT_KEYS, "[job.timeouts]")
    return JobFile(
        name=name,
        app=app,
        output=output,
        participants=tuple(participants),
        overrides=overrides,
        secagg=secagg,
        dp=dp,
        message_timeout=_number(timeouts, "message", 120.0, "[job.timeouts]"),
        start_timeout=_number(timeouts, "start", 30.0, "[job.timeouts]"),
        node_wait_timeout=_number(timeouts, "node-wait", 10.0, "[job.timeouts]"),
        idle_limit=_number(timeouts, "idle", DEFAULT_IDLE_LIMIT, "[job.timeouts]"),
        sources=sources,
    )


def load_job_file(path: Path) -> JobFile:
    """Read and validate a job file.

    Raises:
        JobFileError: the file is missing, not TOML, or not a valid job; the
            message starts with the file's path.
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except IsADirectoryError as e:
        raise JobFileError(
            f"job file {path} is a directory", hint="name the job's TOML file; " + _HINT
        ) from e
    except OSError as e:
        raise JobFileError(
            f"cannot read job file {path}: {e.strerror}",
            hint="check the path; " + _HINT,
        ) from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise JobFileError(
            f"job file {path} is not valid TOML: {e}", hint="fix the line named; " + _HINT
        ) from e
    try:
        job = parse_job(doc, path.resolve().parent)
    except JobFileError as e:
        raise JobFileError(f"{path}: {e}", hint=e.hint) from e
    return replace(job, path=path)
