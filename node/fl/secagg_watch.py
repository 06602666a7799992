"""Ends a SecAgg+ job clearly when a participant is lost before its key shares travel.

In Flower's SecAgg+ each participant sends its public keys (stage
``setup``) and then shares of its secrets (``share_keys``), which the server
forwards to the others with the masked-vector request. A participant lost in
either of these stages leaves the others holding no shares of its secrets;
when the server later lists it as dropped in the ``unmask`` stage, every
neighbour fails with a bare ``KeyError`` (the node id it has no share for),
Flower halts the round, and the job would run on without that round's
training and with no word why.

:class:`SecAggWatch` observes the Grid (as :class:`~node.fl.results.RoundLog`
does). Invariant: when an ``unmask`` message of a round fails at a
participant and some participant was lost in that round's ``setup`` or
``share_keys`` stage, the watch reports one :class:`JobFailedError` naming the
round, the stage, the lost department(s) and why they were lost; the
coordinator ends the job with it as the failure reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import Stage

from node.fl.errors import JobFailedError
from node.fl.grid import GridEvent
from node.fl.mods import secagg_stage

__all__ = ["SecAggWatch"]

#: Stages after which the lost participant's key shares never reach the others.
_KEY_STAGES = (Stage.SETUP, Stage.SHARE_KEYS)


class SecAggWatch:
    """Grid observer: reports a SecAgg+ round that cannot be unmasked after a setup loss."""

    def __init__(self, on_failure: Callable[[JobFailedError], None]) -> None:
        self._on_failure = on_failure
        self._lock = threading.Lock()
        #: message id -> (round, stage) of SecAgg+ messages still awaiting a reply.
        self._stages: dict[str, tuple[str, str]] = {}
        #: round -> department -> (stage it was lost in, why).
        self._lost: dict[str, dict[str, tuple[str, str]]] = {}
        self._reported = False

    def sent(self, message: Message) -> None:
        """Grid hook: note the round and stage of a SecAgg+ message."""
        stage = secagg_stage(message) if message.has_content() else None
        if stage is not None:
            with self._lock:
                self._stages[message.metadata.message_id] = (message.metadata.group_id, stage)

    def replied(self, event: GridEvent) -> None:
        """Grid hook: a reply (or error reply) reached the ServerApp."""
        with self._lock:
            key = self._stages.pop(event.message_id, None)
            if key is None or event.error is None:
                return
            round_id, stage = key
            if stage in _KEY_STAGES:
                self._lost.setdefault(round_id, {}).setdefault(
                    event.department, (stage, event.error)
                )
                return
            lost = dict(self._lost.get(round_id, {}))
            if stage != Stage.UNMASK or not lost or self._reported:
                return
            self._reported = True
        self._on_failure(_failure(round_id, lost, event))


def _failure(round_id: str, lost: dict[str, tuple[str, str]], event: GridEvent) -> JobFailedError:
    names = sorted(lost)
    how = "; ".join(f"{d} in the {lost[d][0]} stage: {lost[d][1]}" for d in names)
    who = ", ".join(names)
    # Flower's own reason at the survivors is a bare KeyError of a node id; the
    # lost department and its stage are what the operator can act on.
    return JobFailedError(
        f"SecAgg+ round {round_id} failed in the unmask stage at {event.department}: "
        f"{who} dropped out during SecAgg+ setup ({how}) before its key shares reached "
        "the other participants, so they cannot unmask the round",
        hint=f"check {who}'s node is running and reachable ('fednode status') and launch "
        f"the job again; to train without {who}, remove it from [[participants]] and "
        "lower min-nodes in [strategy]",
    )
