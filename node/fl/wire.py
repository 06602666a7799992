"""The one place where federated-learning protos meet domain objects.

Invariants:

* Every proto message built here stays below gRPC's 4 MiB default: FABs and
  serialised Flower Messages are cut into chunks of at most ``CHUNK_SIZE``.
* A Flower Message crosses the wire only in the form
  ``flwr.common.serde.message_to_proto`` gives it, so any Flower App's records
  arrive exactly as Flower's own engine would deliver them.
* Parsers raise :class:`WireError` on anything malformed; no bare
  ``ValueError`` or protobuf ``DecodeError`` escapes.
* A reassembled Flower Message is at most ``MAX_MESSAGE_SIZE`` bytes, and
  :func:`message_from_chunks` asks its caller to authorize the stream on the
  first chunk, so a peer with no business at this node cannot make it buffer
  more than one chunk.
* A job's end reason is at most ``MAX_END_REASON`` characters with no control
  characters: the sender shortens and cleans it (:func:`end_reason`), the
  receiver refuses anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from google.protobuf.message import DecodeError

from node.agreements.document import is_agreement_id
from node.catalog.registry import is_dataset_name
from node.errors import brief
from node.fl.errors import WireError
from protocols.fednode.v1 import federated_pb2 as pb

__all__ = [
    "CHUNK_SIZE",
    "JOB_SPEC_VERSION",
    "MAX_END_REASON",
    "MAX_FAB_SIZE",
    "MAX_MESSAGE_SIZE",
    "DpConfig",
    "JobEndInfo",
    "JobSpec",
    "JobStartedInfo",
    "end_reason",
    "job_alive_from_proto",
    "job_alive_to_proto",
    "job_end_from_proto",
    "job_end_to_proto",
    "job_start_from_parts",
    "job_start_parts",
    "job_started_from_proto",
    "job_started_to_proto",
    "message_chunks",
    "message_digest",
    "message_from_chunks",
]

JOB_SPEC_VERSION = 1
#: Largest slice of a FAB or a serialised Message carried by one proto message.
CHUNK_SIZE = 1 << 20
#: Flower refuses FABs above 10 MB; a participant refuses anything above this.
MAX_FAB_SIZE = 16 << 20
#: A reassembled Flower Message larger than this is refused: it bounds the memory
#: one Deliver stream can take. 128 MiB holds a model of ~16 million float64 (or
#: ~32 million float32) parameters plus Flower's framing, far above the tabular
#: models fednode federates (the seed app's is a dozen weights); a larger model
#: needs this raised knowingly, as every stream may then buffer that much.
MAX_MESSAGE_SIZE = 128 << 20
#: Longest end reason (in characters) a JobEnd may carry.
MAX_END_REASON = 500

# Control characters (C0, DEL, C1): a reason is one line of plain text in the ledger.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_JOB_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")

RunConfig = dict[str, bool | int | float | str]


@dataclass(frozen=True)
class DpConfig:
    """Client-side DP with Flower's ``LocalDpMod``: clip the update, add Gaussian noise.

    The noise standard deviation is ``sensitivity * sqrt(2 ln(1.25/delta)) / epsilon``
    (the Gaussian mechanism), applied once per training reply.
    """

    clipping_norm: float
    sensitivity: float
    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        values = (self.clipping_norm, self.sensitivity, self.epsilon, self.delta)
        if not all(math.isfinite(v) for v in values):
            raise WireError("DP settings must be finite numbers")
        # A sensitivity of 0 means no noise at all while the ledger would record DP.
        if self.clipping_norm <= 0 or self.sensitivity <= 0:
            raise WireError(
                f"DP clipping_norm and sensitivity must be > 0, got "
                f"{self.clipping_norm} and {self.sensitivity}"
            )
        if not (self.epsilon > 0 and 0 < self.delta < 1):
            raise WireError(
                f"DP needs epsilon > 0 and 0 < delta < 1, got {self.epsilon} and {self.delta}"
            )

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the Gaussian noise added to each update."""
        return self.sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon

    @property
    def effective_epsilon(self) -> float:
        """The epsilon this noise gives an update clipped to ``clipping_norm``.

        A clipped update can move by the clipping norm, so that, not
        ``sensitivity``, is what the noise has to hide: with a smaller
        ``sensitivity`` the guarantee is ``epsilon * clipping_norm / sensitivity``.
        """
        return self.epsilon * self.clipping_norm / self.sensitivity

    def weakness(self) -> str | None:
        """A warning when the noise is calibrated below the clipping norm, else ``None``."""
        if self.sensitivity >= self.clipping_norm:
            return None
        return (
            f"DP sensitivity {self.sensitivity:g} is below the clipping norm "
            f"{self.clipping_norm:g}: a clipped update gets epsilon "
            f"{self.effective_epsilon:.4g}, not {self.epsilon:g}; a sensitivity equal to "
            "the clipping norm gives the stated guarantee"
        )

    def to_record(self) -> dict[str, str]:
        """The settings for the ledger: decimal strings, since ledger JSON has no floats."""
        return {
            "mechanism": "gaussian/local",
            "clipping_norm": repr(self.clipping_norm),
            "sensitivity": repr(self.sensitivity),
            "epsilon": repr(self.epsilon),
            "delta": repr(self.delta),
            "noise_stddev": repr(self.noise_stddev),
            "effective_epsilon": repr(self.effective_epsilon),
        }


@dataclass(frozen=True)
class JobSpec:
    """What a participant needs to take part in one job."""

    job_id: str
    run_id: int
    node_id: int
    fab_sha256: str
    fab_size: int
    agreement: str
    dataset: str
    run_config: RunConfig = field(default_factory=dict)
    secagg: bool = False
    dp: DpConfig | None = None
    #: Seconds without word from the coordinator after which the participant
    #: ends the job itself; 0 means no limit (a coordinator predating it).
    idle_limit: float = 0.0


@dataclass(frozen=True)
class JobEndInfo:
    """An EndJob request: which job, how it ended, and why (empty if it finished)."""

    job_id: str
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class JobStartedInfo:
    """A participant's answer to StartJob."""

    job_id: str
    columns: tuple[str, ...]
    rows: int


def _spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    proto = pb.JobSpec(
        version=JOB_SPEC_VERSION,
        job_id=spec.job_id,
        run_id=spec.run_id,
        node_id=spec.node_id,
        fab_sha256=spec.fab_sha256,
        fab_size=spec.fab_size,
        agreement=spec.agreement,
        dataset=spec.dataset,
        run_config_json=json.dumps(spec.run_config, sort_keys=True),
        secagg=spec.secagg,
        idle_limit=spec.idle_limit,
    )
    if spec.dp is not None:
        proto.dp.CopyFrom(
            pb.DpSettings(
                clipping_norm=spec.dp.clipping_norm,
                sensitivity=spec.dp.sensitivity,
                epsilon=spec.dp.epsilon,
                delta=spec.dp.delta,
            )
        )
    return proto


def _run_config_from_json(text: str) -> RunConfig:
    try:
        raw: Any = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise WireError("job spec run config is not valid JSON") from e
    if not isinstance(raw, dict):
        raise WireError("job spec run config must be a JSON object")
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str):
            raise WireError(f"run config value {key!r} must be bool, int, float or str")
    return raw


def _spec_from_proto(proto: pb.JobSpec) -> JobSpec:
    if proto.version != JOB_SPEC_VERSION:
        raise WireError(
            f"job spec version {proto.version} is not supported (expected {JOB_SPEC_VERSION})"
        )
    for name in ("job_id", "agreement", "dataset"):
        if not getattr(proto, name):
            raise WireError(f"job spec has no {name}")
    if not is_agreement_id(proto.agreement):
        raise WireError(f"job spec names no agreement id: {brief(proto.agreement)}")
    if not is_dataset_name(proto.dataset):
        raise WireError(f"job spec names no dataset: {brief(proto.dataset)}")
    if not _JOB_ID.match(proto.job_id):
        raise WireError("job id must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'")
    digest = proto.fab_sha256
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise WireError("job spec fab_sha256 must be 64 lower-case hex characters")
    if proto.fab_size > MAX_FAB_SIZE:
        raise WireError(f"FAB of {proto.fab_size} bytes exceeds the {MAX_FAB_SIZE}-byte limit")
    if not (math.isfinite(proto.idle_limit) and proto.idle_limit >= 0):
        raise WireError(f"job spec idle_limit must be a finite number >= 0, got {proto.idle_limit}")
    dp = None
    if proto.HasField("dp"):
        d = proto.dp
        dp = DpConfig(d.clipping_norm, d.sensitivity, d.epsilon, d.delta)
    return JobSpec(
        job_id=proto.job_id,
        run_id=proto.run_id,
        node_id=proto.node_id,
        fab_sha256=digest,
        fab_size=proto.fab_size,
        agreement=proto.agreement,
        dataset=proto.dataset,
        run_config=_run_config_from_json(proto.run_config_json),
        secagg=proto.secagg,
        dp=dp,
        idle_limit=proto.idle_limit,
    )


def job_start_parts(spec: JobSpec, fab: bytes) -> Iterator[pb.JobStartPart]:
    """The StartJob request stream: the spec, then the FAB in chunks."""
    yield pb.JobStartPart(spec=_spec_to_proto(spec))
    for offset in range(0, len(fab), CHUNK_SIZE):
        yield pb.JobStartPart(fab_chunk=fab[offset : offset + CHUNK_SIZE])


def job_start_from_parts(parts: Iterable[pb.JobStartPart]) -> tuple[JobSpec, bytes]:
    """Parse a StartJob stream; the FAB bytes must match the announced size and SHA-256.

    Raises:
        WireError: the stream does not start with a spec, repeats it, carries more
            or fewer FAB bytes than announced, or the bytes do not hash to fab_sha256.
    """
    spec: JobSpec | None = None
    fab = bytearray()
    for part in parts:
        kind = part.WhichOneof("part")
        if kind == "spec":
            if spec is not None:
                raise WireError("StartJob stream carries a second job spec")
            spec = _spec_from_proto(part.spec)
        elif kind == "fab_chunk":
            if spec is None:
                raise WireError("StartJob stream sends FAB bytes before the job spec")
            fab += part.fab_chunk
            if len(fab) > spec.fab_size:
                raise WireError(f"FAB is longer than the announced {spec.fab_size} bytes")
        else:
            raise WireError("StartJob stream carries an empty part")
    if spec is None:
        raise WireError("StartJob stream carries no job spec")
    if len(fab) != spec.fab_size:
        raise WireError(f"FAB is truncated: expected {spec.fab_size} bytes, got {len(fab)}")
    if hashlib.sha256(fab).hexdigest() != spec.fab_sha256:
        raise WireError("FAB bytes do not match the announced SHA-256")
    return spec, bytes(fab)


def job_started_to_proto(info: JobStartedInfo) -> pb.JobStarted:
    return pb.JobStarted(job_id=info.job_id, columns=list(info.columns), rows=info.rows)


def job_started_from_proto(proto: pb.JobStarted) -> JobStartedInfo:
    return JobStartedInfo(job_id=proto.job_id, columns=tuple(proto.columns), rows=proto.rows)


def end_reason(text: str) -> str:
    """``text`` as a JobEnd reason: control characters and runs of white space
    become one space, and anything past ``MAX_END_REASON`` characters is cut
    (ending in an ellipsis)."""
    clean = " ".join(_CONTROL.sub(" ", text).split())
    if len(clean) > MAX_END_REASON:
        clean = clean[: MAX_END_REASON - 1] + "\u2026"
    return clean


def job_end_to_proto(job_id: str, outcome: str, reason: str = "") -> pb.JobEnd:
    """An EndJob request; ``reason`` is passed through :func:`end_reason` first."""
    return pb.JobEnd(job_id=job_id, outcome=outcome, reason=end_reason(reason))


def job_end_from_proto(proto: pb.JobEnd) -> JobEndInfo:
    """The job, outcome and reason of an EndJob request.

    Raises:
        WireError: the outcome is neither "ok" nor "error", or the reason is
            longer than ``MAX_END_REASON`` characters or holds control characters.
    """
    if proto.outcome not in ("ok", "error"):
        raise WireError(f"job end outcome must be 'ok' or 'error', got {brief(proto.outcome)}")
    if len(proto.reason) > MAX_END_REASON:
        raise WireError(
            f"job end reason has {len(proto.reason)} characters; at most {MAX_END_REASON}"
        )
    if _CONTROL.search(proto.reason):
        raise WireError("job end reason holds control characters")
    return JobEndInfo(proto.job_id, proto.outcome, proto.reason)


def job_alive_to_proto(job_id: str) -> pb.JobAlive:
    return pb.JobAlive(job_id=job_id)


def job_alive_from_proto(proto: pb.JobAlive) -> str:
    """The job id of a KeepJob request (an unknown id is the participant's to refuse)."""
    return str(proto.job_id)


def _message_bytes(message: Message) -> bytes:
    data: bytes = message_to_proto(message).SerializeToString(deterministic=True)
    return data


def message_digest(message: Message) -> str:
    """``sha256:<hex>`` over the deterministic serialisation of a Flower Message."""
    return "sha256:" + hashlib.sha256(_message_bytes(message)).hexdigest()


def message_chunks(message: Message, job_id: str = "") -> Iterator[pb.MessageChunk]:
    """Serialise a Flower Message and cut it into chunks; the last one has ``last`` set."""
    data = _message_bytes(message)
    total = max(1, math.ceil(len(data) / CHUNK_SIZE))
    for index in range(total):
        piece = data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
        yield pb.MessageChunk(job_id=job_id, data=piece, last=index == total - 1)


def message_from_chunks(
    chunks: Iterable[pb.MessageChunk], authorize: Callable[[str], None] | None = None
) -> tuple[str, Message]:
    """Reassemble one Flower Message; returns (job_id of the first chunk, message).

    ``authorize`` is called with the job id as soon as the first chunk arrives,
    before any further chunk is read; whatever it raises ends the stream.

    Raises:
        WireError: no chunk, chunks after the last, a missing final chunk, a job id
            that changes mid-stream, an oversized or undecodable message.
    """
    job_id: str | None = None
    buffer = bytearray()
    finished = False
    for chunk in chunks:
        if finished:
            raise WireError("message stream continues after its final chunk")
        if job_id is None:
            job_id = chunk.job_id
            if authorize is not None:
                authorize(job_id)
        elif chunk.job_id != job_id:
            raise WireError("message stream changes job id mid-stream")
        buffer += chunk.data
        if len(buffer) > MAX_MESSAGE_SIZE:
            raise WireError(f"message exceeds the {MAX_MESSAGE_SIZE}-byte limit")
        finished = chunk.last
    if job_id is None:
        raise WireError("message stream is empty")
    if not finished:
        raise WireError("message stream ended without its final chunk")
    proto = ProtoMessage()
    try:
        proto.ParseFromString(bytes(buffer))
        message = message_from_proto(proto)
    except (DecodeError, ValueError, TypeError, KeyError) as e:
        raise WireError("message bytes are not a valid Flower Message") from e
    if proto.metadata.message_id:
        # serde carries the id in metadata; restore it as Flower's engine does.
        message.metadata.__dict__["_message_id"] = proto.metadata.message_id
    return job_id, message
