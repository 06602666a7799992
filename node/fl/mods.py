"""Participant-side Flower mods that wrap every ClientApp a node runs.

The chain, outermost first, is::

    gate -> ledger -> guard -> secaggplus_mod (if asked) -> LocalDpMod (if asked) -> ClientApp

so that a denied message never reaches the ledger mod's ``fl.task`` record (it
is recorded as ``access.denied`` instead), the ledger digests the reply exactly
as it leaves the node (masked, under SecAgg+), and DP noise is added before
SecAgg+ masks the update. The guard turns any exception below it into an
error reply (``CLIENT_APP_RAISED_EXCEPTION``), so the ledger records a failed
task as ``fl.reply`` with outcome ``error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context, Error, Message
from flwr.client.mod import LocalDpMod as LegacyLocalDpMod
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from node.errors import NodeError
from node.fl import wire
from node.runtime import AuditSink

__all__ = [
    "TaskInfo",
    "dp_mod",
    "guard_mod",
    "ledger_mod",
    "mods_for",
    "policy_gate",
    "round_of",
    "secagg_stage",
    "secaggplus_mod",
]

_log = logging.getLogger(__name__)

#: Content key Flower's legacy (Ins/Res) messages use for training parameters.
_LEGACY_FIT_KEY = "fitins.parameters"
#: Longest SecAgg+ stage name recorded (Flower's are short words; anything else is dropped).
_MAX_STAGE = 32


def round_of(message: Message) -> int | None:
    """The FL round of an instruction message, if it says.

    Legacy workflows put it in ``group_id``; message-API strategies send a
    ``server-round`` config value instead.
    """
    group = message.metadata.group_id
    if group.isdigit():
        return int(group)
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
        detail: dict[str, object] = {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "message_type": message.metadata.message_type,
            "fab_sha256": self.fab_sha256,
            "dp": self.dp.to_record() if self.dp else None,
            "secagg": self.secagg,
        }
        round_id = round_of(message)
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
    if message.has_error():
        return None
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get(Key.STAGE) if configs is not None else None
    return stage if isinstance(stage, str) and len(stage) <= _MAX_STAGE else None


def _error_reply(message: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=message)


def policy_gate(info: TaskInfo, audit: AuditSink, check: Callable[[], None]) -> Mod:
    """Refuse a message unless ``check`` passes (FAB approved, agreement allows ``federated``).

    A refusal becomes an error reply (``MOD_FAILED_PRECONDITION``) and an
    ``access.denied`` ledger record; the ClientApp never sees the message.
    """

    def gate(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            check()
        except NodeError as e:
            audit.record(
                "access.denied",
                peer=info.coordinator,
                agreement=info.agreement,
                dataset=info.dataset,
                outcome="denied",
                detail={"reason": str(e), **info.detail(message)},
            )
            return _error_reply(
                message, ErrorCode.MOD_FAILED_PRECONDITION, f"denied by node policy: {e}"
            )
        return call_next(message, context)

    return gate


def ledger_mod(info: TaskInfo, audit: AuditSink) -> Mod:
    """Record ``fl.task`` before the app runs and ``fl.reply`` (with a digest) after."""

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


def mods_for(info: TaskInfo, audit: AuditSink, check: Callable[[], None]) -> list[Mod]:
    """The full mod chain for a job, outermost first."""
    mods: list[Mod] = [policy_gate(info, audit, check), ledger_mod(info, audit), guard_mod]
    if info.secagg:
        mods.append(secaggplus_mod)
    if info.dp is not None:
        mods.append(dp_mod(info.dp))
    return mods
