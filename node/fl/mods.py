"""Participant-side Flower mods that wrap every ClientApp a node runs.

The chain, outermost first, is::

    gate -> ledger -> guard -> secagg floor + secaggplus_mod (if asked) -> LocalDpMod (if asked)
         -> ClientApp

so that a denied message never reaches the ledger mod's ``fl.task`` record (it
is recorded as ``access.denied`` instead), the ledger digests the reply exactly
as it leaves the node (masked, under SecAgg+), and DP noise is added before
SecAgg+ masks the update. The guard turns any exception below it into an
error reply (``CLIENT_APP_RAISED_EXCEPTION``), so the ledger records a failed
task as ``fl.reply`` with outcome ``error``.

``fl.reply`` means "this reply left the node, with this digest". Before the
ledger mod records it, it releases the reply (:class:`JobChecks`): the job
must still run and its approval and agreement still hold. A reply that fails
the release is dropped, never sent, and has no ``fl.reply``: a refusal is
recorded as ``access.denied`` (outcome ``denied``, the reason starting "reply
dropped, not sent", the message's job, type, round and stage), as the gate
records a refused message, and ends the job; a job that ended while the app
ran already says so in its ``fl.ended`` entry (``interrupted``).

The gate also refuses a message whose ``group_id`` looks like a round number
but is not 1-9 ASCII digits; ledger details never raise, whatever the message
carries.

SecAgg+ floor. Flower's ``secaggplus_mod`` takes the protocol's parameters
from the coordinator's setup message as they come. A coordinator that asks
for threshold 1 (or lists this node alone) can rebuild the node's self-mask
from the node's own share and read its individual update, while the job says
``secagg``. :func:`secagg_floor_mod` checks before Flower's mod runs, and
refuses (an error reply and an ``access.denied`` record) unless:

* setup: threshold >= ``MIN_SECAGG_THRESHOLD`` (2), share count >= threshold,
  and sample size >= ``MIN_SECAGG_NODES`` (2);
* share_keys: at least ``MIN_SECAGG_NODES`` nodes' keys are listed;
* unmask: this node is not named dead, and no node is named both active and
  dead (which would hand out both halves of one node's masks).

The job spec carries no count of participants, so the floor is absolute, not
"all of the job's participants". What it does not stop: SecAgg+ public keys
are not authenticated, so a coordinator that invents the other nodes' keys (or
shows different nodes different views of who dropped out) still recovers an
update. SecAgg+ protects against an honest-but-curious coordinator, one that
follows the protocol but reads everything it receives; the floor keeps such a
coordinator from choosing parameters under which "following the protocol"
reveals an update.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flwr.app import Context, Error, Message
from flwr.client.mod import LocalDpMod as LegacyLocalDpMod
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from node.errors import AccessDenied, NodeError, brief
from node.fl import wire
from node.fl.errors import WireError
from node.runtime import AuditSink

__all__ = [
    "MIN_SECAGG_NODES",
    "MIN_SECAGG_THRESHOLD",
    "JobChecks",
    "SecAggFloorError",
    "TaskInfo",
    "check_secagg_floor",
    "dp_mod",
    "guard_mod",
    "ledger_mod",
    "mods_for",
    "policy_gate",
    "round_of",
    "secagg_floor_mod",
    "secagg_stage",
    "secaggplus_mod",
]

_log = logging.getLogger(__name__)

#: Content key Flower's legacy (Ins/Res) messages use for training parameters.
_LEGACY_FIT_KEY = "fitins.parameters"
#: Longest SecAgg+ stage name recorded (Flower's are short words; anything else is dropped).
_MAX_STAGE = 32
#: A round number in ``group_id``: 1-9 ASCII digits (int() of thousands of digits raises).
_ROUND = re.compile(r"[0-9]{1,9}")
#: Smallest SecAgg+ reconstruction threshold accepted: 1 lets one share rebuild a mask.
MIN_SECAGG_THRESHOLD = 2
#: Fewest nodes a SecAgg+ round must name: alone, a node's sum is its own update.
MIN_SECAGG_NODES = 2


class SecAggFloorError(AccessDenied):
    """The coordinator asked for SecAgg+ parameters that would reveal this node's update."""


def round_of(message: Message) -> int | None:
    """The FL round of an instruction message, if it says.

    Legacy workflows put it in ``group_id``; message-API strategies send a
    ``server-round`` config value instead. A ``group_id`` that is not all
    digits is not a round (``None``).

    Raises:
        WireError: ``group_id`` is all digits but not 1-9 ASCII digits.
    """
    group = message.metadata.group_id
    if _ROUND.fullmatch(group):
        return int(group)
    if group.isdigit():
        raise WireError(f"message group id {brief(group, 24)} is not a round number of 1-9 digits")
    if message.has_content():
        for record in message.content.config_records.values():
            value = record.get("server-round")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


@dataclass(frozen=True)
class TaskInfo:
    """What the ledger records about the job a message belongs to."""

    job_id: str
    run_id: int
    coordinator: str
    agreement: str
    dataset: str
    columns: tuple[str, ...]
    fab_sha256: str
    secagg: bool
    dp: wire.DpConfig | None

    def detail(self, message: Message) -> dict[str, object]:
        """What the ledger records about ``message``; never raises on what it carries."""
        detail: dict[str, object] = {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "message_type": message.metadata.message_type,
            "fab_sha256": self.fab_sha256,
            "dp": self.dp.to_record() if self.dp else None,
            "secagg": self.secagg,
        }
        try:
            round_id = round_of(message)
        except WireError:
            round_id = None  # the gate refuses such a message; the record still gets made
        if round_id is not None:
            detail["round"] = round_id
        stage = secagg_stage(message)
        if stage is not None:
            detail["secagg_stage"] = stage
        return detail


def secagg_stage(message: Message) -> str | None:
    """The SecAgg+ stage a training message is in (setup, share_keys, ...), if it is one.

    Four SecAgg+ messages make one round; without the stage their ledger
    entries would look alike.
    """
    if message.has_error() or not message.has_content():
        return None
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get(Key.STAGE) if configs is not None else None
    return stage if isinstance(stage, str) and len(stage) <= _MAX_STAGE else None


@dataclass(frozen=True)
class JobChecks:
    """What the mods ask the participant about the job a message belongs to."""

    #: Raises a NodeError (AccessDenied when revoked or expired) unless the FAB
    #: is still approved and the agreement still grants ``federated``. Records
    #: nothing and ends nothing.
    recheck: Callable[[], None]
    #: Raises UnknownJobError if the job has ended (e.g. while the app ran).
    running: Callable[[], None]
    #: Ends the job after a refusal was recorded; ``when`` names the step
    #: ("a message was refused", "a reply was dropped") for ``fl.ended``.
    end: Callable[[AccessDenied, str], None]


def _record_denied(audit: AuditSink, info: TaskInfo, message: Message, reason: str) -> None:
    audit.record(
        "access.denied",
        peer=info.coordinator,
        agreement=info.agreement,
        dataset=info.dataset,
        outcome="denied",
        detail={"reason": reason, **info.detail(message)},
    )


def _denied(audit: AuditSink, info: TaskInfo, message: Message, error: Exception) -> Message:
    """Record a refused message as ``access.denied`` and answer it with an error reply."""
    _record_denied(audit, info, message, str(error))
    return _error_reply(
        message, ErrorCode.MOD_FAILED_PRECONDITION, f"denied by node policy: {error}"
    )


def _error_reply(message: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=message)


def policy_gate(info: TaskInfo, audit: AuditSink, checks: JobChecks) -> Mod:
    """Refuse a message unless ``checks.recheck`` passes (FAB approved, agreement
    allows ``federated``).

    A refusal becomes an error reply (``MOD_FAILED_PRECONDITION``) and an
    ``access.denied`` ledger record; the ClientApp never sees the message. A
    revoked or expired approval or agreement then ends the job.
    """

    def gate(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            round_of(message)
            checks.recheck()
        except NodeError as e:
            reply = _denied(audit, info, message, e)
            if isinstance(e, AccessDenied):
                checks.end(e, "a message was refused")
            return reply
        return call_next(message, context)

    return gate


def ledger_mod(info: TaskInfo, audit: AuditSink, checks: JobChecks) -> Mod:
    """Record ``fl.task`` before the app runs and, once the reply is released,
    ``fl.reply`` (with a digest) after.

    The reply is released only if the job still runs and ``checks.recheck``
    passes; otherwise it is dropped: see the module docstring.

    Raises (from the returned mod):
        UnknownJobError: the job ended while the app ran.
        NodeError: the recheck failed (AccessDenied: revoked or expired; the
            job has ended).
    """

    def record(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        audit.record(
            "fl.task",
            peer=info.coordinator,
            agreement=info.agreement,
            dataset=info.dataset,
            columns=list(info.columns),
            detail=info.detail(message),
        )
        reply = call_next(message, context)
        # A reply computed on data no longer granted must not leave the node.
        checks.running()
        try:
            checks.recheck()
        except NodeError as e:
            _record_denied(audit, info, message, f"reply dropped, not sent: {e}")
            if isinstance(e, AccessDenied):
                checks.end(e, "a reply was dropped")
            raise
        # The id is the reply's content hash; set it now so the digest covers the bytes sent.
        reply.metadata.__dict__["_message_id"] = reply.object_id
        detail = info.detail(message)
        if reply.has_error():
            detail["error"] = (reply.error.reason or "")[:200]
        audit.record(
            "fl.reply",
            peer=info.coordinator,
            agreement=info.agreement,
            dataset=info.dataset,
            digest=wire.message_digest(reply),
            outcome="error" if reply.has_error() else "ok",
            detail=detail,
        )
        return reply

    return record


def guard_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Turn an exception below into an error reply, as Flower's SuperNode does."""
    try:
        return call_next(message, context)
    except Exception as e:  # noqa: BLE001 -- foreign code; its failure is the reply
        _log.exception("ClientApp or mod raised on %s", message.metadata.message_type)
        reason = f"{type(e)}:<'{e}'>"
        return _error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)


def dp_mod(dp: wire.DpConfig) -> Mod:
    """Flower's ``LocalDpMod`` on training messages, in the API the app speaks.

    Message-API apps (one ArrayRecord in and out) get ``flwr.clientapp.mod.LocalDpMod``;
    legacy Ins/Res apps get ``flwr.client.mod.LocalDpMod``. Other message types pass.
    """
    args = (dp.clipping_norm, dp.sensitivity, dp.epsilon, dp.delta)
    modern = LocalDpMod(*args)
    legacy = LegacyLocalDpMod(*args)

    def apply(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not message.metadata.message_type.startswith("train"):
            return call_next(message, context)
        if _LEGACY_FIT_KEY in message.content.array_records:
            return legacy(message, context, call_next)
        return modern(message, context, call_next)

    return apply


def _count(configs: object, key: str) -> int:
    value = configs.get(key) if isinstance(configs, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SecAggFloorError(f"SecAgg+ setup has no whole number {key!r}")
    return value


def _node_ids(configs: object, key: str) -> list[int]:
    value = configs.get(key) if isinstance(configs, Mapping) else None
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise SecAggFloorError(f"SecAgg+ unmask has no node id list {key!r}")
    return list(value)


def check_secagg_floor(message: Message) -> None:
    """Refuse SecAgg+ parameters under which the protocol would reveal this node's update.

    Only the setup, share_keys and unmask stages are checked (see the module
    docstring); anything else is left to Flower's ``secaggplus_mod``.

    Raises:
        SecAggFloorError: the threshold is below 2 or above the share count, the
            round names fewer than 2 nodes, or unmask names this node dead or a
            node both active and dead.
    """
    if message.has_error() or not message.has_content():
        return
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get(Key.STAGE) if configs is not None else None
    if stage == Stage.SETUP:
        threshold = _count(configs, Key.THRESHOLD)
        shares = _count(configs, Key.SHARE_NUMBER)
        sample = _count(configs, Key.SAMPLE_NUMBER)
        if threshold < MIN_SECAGG_THRESHOLD:
            raise SecAggFloorError(
                f"SecAgg+ threshold {threshold} is below {MIN_SECAGG_THRESHOLD}: "
                "one share would rebuild this node's mask"
            )
        if shares < threshold:
            raise SecAggFloorError(
                f"SecAgg+ share count {shares} is below the threshold {threshold}"
            )
        if sample < MIN_SECAGG_NODES:
            raise SecAggFloorError(
                f"SecAgg+ round samples {sample} node(s); at least {MIN_SECAGG_NODES} "
                "are needed to hide one node's update"
            )
    elif stage == Stage.SHARE_KEYS:
        listed = sum(1 for key in (configs or {}) if key != Key.STAGE)
        if listed < MIN_SECAGG_NODES:
            raise SecAggFloorError(
                f"SecAgg+ round lists the keys of {listed} node(s); "
                f"at least {MIN_SECAGG_NODES} are needed"
            )
    elif stage == Stage.UNMASK:
        active = _node_ids(configs, Key.ACTIVE_NODE_ID_LIST)
        dead = _node_ids(configs, Key.DEAD_NODE_ID_LIST)
        if message.metadata.dst_node_id in dead:
            raise SecAggFloorError("SecAgg+ unmask names this node, which is answering, dead")
        if set(active) & set(dead):
            raise SecAggFloorError("SecAgg+ unmask names a node both active and dead")


def secagg_floor_mod(info: TaskInfo, audit: AuditSink) -> Mod:
    """Flower's ``secaggplus_mod`` behind :func:`check_secagg_floor`.

    A refusal becomes an error reply (``MOD_FAILED_PRECONDITION``) and an
    ``access.denied`` record, like the policy gate's.
    """

    def floor(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            check_secagg_floor(message)
        except SecAggFloorError as e:
            _log.warning("job %s: %s", info.job_id, e)
            return _denied(audit, info, message, e)
        return secaggplus_mod(message, context, call_next)

    return floor


def mods_for(info: TaskInfo, audit: AuditSink, checks: JobChecks) -> list[Mod]:
    """The full mod chain for a job, outermost first."""
    mods: list[Mod] = [policy_gate(info, audit, checks), ledger_mod(info, audit, checks), guard_mod]
    if info.secagg:
        mods.append(secagg_floor_mod(info, audit))
    if info.dp is not None:
        mods.append(dp_mod(info.dp))
    return mods
