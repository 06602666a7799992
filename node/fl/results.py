"""What a coordinator learns from a run, and how it is written to disk.

The ServerApp is any Flower App, so the coordinator does not ask it for
results; it observes the Grid. Per round (Flower's ``group_id``) and message
type it keeps who replied, who failed, each reply's metrics and their
example-weighted mean. The final model is the last ArrayRecord the ServerApp
broadcast (message-API ``arrays`` or legacy ``fitins``/``evaluateins``
parameters): with a federated evaluation after the last training round, that
is the final aggregate.

Under SecAgg+ the observed training replies hold only masked vectors; the
model recorded is still the aggregate the ServerApp broadcast afterwards.

Files in the output directory: ``model.npz`` (arrays keyed by their record
keys), ``rounds.json`` and ``summary.json``. Invariants:

* A job claims its output folder before anything else starts
  (:func:`claim_output`): a folder already holding results is refused unless
  the launch asked to overwrite them, and two jobs never write to one folder
  at once (an advisory lock the operating system drops if the node dies).
* Results appear atomically: every file is written whole to a hidden staging
  folder inside the output folder and fsynced, then renamed into place, with
  ``summary.json`` last. A crash leaves no half-written results file, and a
  ``summary.json`` always sits next to its own job's other files.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from node.durable import fsync_directory
from node.errors import OutputError
from node.fl.grid import GridEvent
from node.fl.mods import round_of

__all__ = ["RESULT_FILES", "OutputClaim", "RoundLog", "claim_output", "write_json", "write_results"]

#: The files a job writes to its output folder; ``summary.json`` is written last.
RESULT_FILES = ("model.npz", "rounds.json", "summary.json")
_LOCK_NAME = ".fednode-job.lock"
_STAGING_PREFIX = ".fednode-results-"


def _numbers(reply: Message) -> dict[str, float]:
    """Numeric metrics of a reply: every MetricRecord, plus legacy numeric config metrics."""
    out: dict[str, float] = {}
    if not reply.has_content():
        return out
    content = reply.content
    records: list[tuple[str, Any]] = list(content.metric_records.items())
    records += [(k, v) for k, v in content.config_records.items() if k.endswith(".metrics")]
    for _, record in records:
        for key, value in record.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            out[key] = float(value)
    return out


def _phase_of(message: Message) -> tuple[str, str]:
    """(round, type) of an instruction message.

    The round is Flower's ``group_id`` when the app sets it (legacy workflows
    do), else the ``server-round`` config value message-API strategies send.
    Multi-stage protocols (SecAgg+) add their stage to the type.
    """
    number = round_of(message)
    round_id = str(number) if number is not None else message.metadata.group_id
    kind = message.metadata.message_type
    if message.has_content():
        for record in message.content.config_records.values():
            stage = record.get("stage")
            if isinstance(stage, str):
                kind = f"{kind}/{stage}"
    return round_id, kind


@dataclass
class _Phase:
    group_id: str
    message_type: str
    replies: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds since the log started: first message sent, last reply received.
    started: float = 0.0
    finished: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.replies if r["ok"]]
        weights = [
            r["metrics"].get("num-examples", r["metrics"].get("num_examples", 1.0)) for r in ok
        ]
        keys = sorted({k for r in ok for k in r["metrics"]} - {"num-examples", "num_examples"})
        mean: dict[str, float] = {}
        total = sum(weights)
        for key in keys:
            pairs = [
                (r["metrics"][key], w)
                for r, w in zip(ok, weights, strict=True)
                if key in r["metrics"]
            ]
            weight = sum(w for _, w in pairs)
            if weight > 0:
                mean[key] = sum(v * w for v, w in pairs) / weight
        return {
            "round": int(self.group_id) if self.group_id.isdigit() else self.group_id,
            "type": self.message_type,
            "ok": sorted(r["department"] for r in ok),
            "failed": {r["department"]: r["error"] for r in self.replies if not r["ok"]},
            "examples": total,
            "started": round(self.started, 4),
            "finished": round(self.finished, 4),
            "metrics": mean,
            "replies": self.replies,
        }


class RoundLog:
    """Observer of a NodeGrid: per-round replies, metrics and the last broadcast model."""

    def __init__(self, on_phase: Any = None, on_reply: Any = None) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], _Phase] = {}
        self._order: list[tuple[str, str]] = []
        self._flushed: set[tuple[str, str]] = set()
        self._phase_by_message: dict[str, tuple[str, str]] = {}
        self._on_phase = on_phase
        self._on_reply = on_reply
        self.model: dict[str, np.ndarray] | None = None
        self._t0 = time.monotonic()

    def sent(self, message: Message) -> None:
        """Grid hook: a message is about to leave."""
        key = _phase_of(message)
        with self._lock:
            self._phase_by_message[message.metadata.message_id] = key
            if key not in self._phases:
                previous = self._order[-1] if self._order else None
                self._phases[key] = _Phase(*key, started=time.monotonic() - self._t0)
                self._order.append(key)
            else:
                previous = None
            if message.has_content():
                for name, record in message.content.array_records.items():
                    if name in ("arrays", "fitins.parameters", "evaluateins.parameters") or (
                        len(message.content.array_records) == 1
                    ):
                        self.model = _arrays(record)
                        break
        if previous is not None:
            self._flush(previous)

    def replied(self, event: GridEvent) -> None:
        """Grid hook: a reply (or error reply) reached the ServerApp."""
        entry = {
            "department": event.department,
            "ok": event.error is None,
            "error": event.error,
            "seconds": round(event.seconds, 4),
            "metrics": _numbers(event.reply) if event.error is None else {},
        }
        with self._lock:
            key = self._phase_by_message.pop(event.message_id, (event.group_id, event.message_type))
            phase = self._phases.setdefault(key, _Phase(*key))
            phase.replies.append(entry)
            phase.finished = time.monotonic() - self._t0
        if self._on_reply is not None:
            self._on_reply({"round": key[0], "type": key[1], **entry})

    def finish(self) -> None:
        """Flush the last phase."""
        with self._lock:
            last = self._order[-1] if self._order else None
        if last is not None:
            self._flush(last)

    def _flush(self, key: tuple[str, str]) -> None:
        with self._lock:
            if key in self._flushed:
                return
            self._flushed.add(key)
            summary = self._phases[key].summary()
        if self._on_phase is not None:
            self._on_phase(summary)

    def rounds(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._phases[k].summary() for k in self._order]


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    try:
        return {key: np.asarray(array.numpy()) for key, array in record.items()}
    except (ValueError, TypeError):
        return {}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp name of its own per writer: two threads updating one status file
    # must not rename each other's half-written bytes into place.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        tmp.chmod(0o644)  # mkstemp makes 0600; results are for whoever reads the folder
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write human-readable JSON atomically."""
    _atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


_OVERWRITE_HINT = (
    "choose another [job].output in the job file, move those results away, "
    "or launch with --overwrite to replace them"
)


class OutputClaim:
    """A job's hold on its output folder; :meth:`release` when the results are written."""

    def __init__(self, output: Path, fd: int) -> None:
        self.output = output
        self._fd: int | None = fd

    def release(self) -> None:
        """Let another job use the folder (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _earlier_job(output: Path) -> str:
    """The id of the job whose summary is in ``output``, for the refusal message."""
    try:
        job_id = json.loads((output / "summary.json").read_text(encoding="utf-8"))["job_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" of job {job_id}" if isinstance(job_id, str) else ""


def claim_output(output: Path, *, overwrite: bool) -> OutputClaim:
    """Claim ``output`` for one job, creating it if needed.

    Raises:
        OutputError: it is not a folder or cannot be created; another job is
            writing to it; or it holds results and ``overwrite`` is false.
    """
    if output.exists() and not output.is_dir():
        raise OutputError(
            f"output {output} exists and is not a folder",
            hint="set [job].output in the job file to a folder",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        fd = os.open(output / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(
            f"cannot use output folder {output}: {e.strerror or e}",
            hint="set [job].output in the job file to a folder this node can write",
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise OutputError(
            f"another job is writing its results to {output}",
            hint="wait for that job to end ('fednode fl status'), or choose another "
            "[job].output in the job file",
        ) from e
    # Staged results of a job that crashed while writing them: never valid results.
    for leftover in output.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    present = [name for name in RESULT_FILES if (output / name).exists()]
    if present and not overwrite:
        os.close(fd)
        raise OutputError(
            f"output folder {output} already holds the results{_earlier_job(output)} "
            f"({', '.join(present)})",
            hint=_OVERWRITE_HINT,
        )
    return OutputClaim(output, fd)


def write_results(output: Path, log: RoundLog, summary: dict[str, Any]) -> None:
    """Write model.npz (if a model was observed), rounds.json and summary.json.

    Each is staged whole and fsynced, then renamed into ``output``, summary
    last. An earlier job's files (an overwrite) are replaced or removed, so
    none is ever taken for this job's.
    """
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f"{_STAGING_PREFIX}{summary.get('job_id', 'job')}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if log.model:
            buffer = io.BytesIO()
            np.savez(buffer, allow_pickle=False, **log.model)
            _atomic_write(staging / "model.npz", buffer.getvalue())
        write_json(staging / "rounds.json", log.rounds())
        write_json(staging / "summary.json", summary)
        fsync_directory(staging)
        # An earlier job's summary goes first and its model too: from here until
        # the new summary lands, the folder holds no summary rather than a stale one.
        for name in RESULT_FILES:
            if not (staging / name).exists():
                (output / name).unlink(missing_ok=True)
        (output / "summary.json").unlink(missing_ok=True)
        for name in RESULT_FILES:
            if (staging / name).exists():
                (staging / name).replace(output / name)
        fsync_directory(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
