"""The SecAgg+ floor: a participant refuses SecAgg+ parameters under which
following the protocol would hand the coordinator its individual update."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from node.fl.mods import SecAggFloorError, check_secagg_floor
from tests.unit.fl.fl_fakes import COORDINATOR, NODE_ID, Cluster, job_spec

NODE = NODE_ID
QUANTIZATION = {
    Key.CLIPPING_RANGE: 16.0,
    Key.TARGET_RANGE: 1 << 22,
    Key.MOD_RANGE: 1 << 30,
    Key.MAX_WEIGHT: 10000.0,
}


def _message(stage: str, configs: dict[str, Any]) -> Message:
    content = RecordDict()
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({Key.STAGE: stage, **configs})
    message = Message(content, NODE, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = message.object_id
    message.metadata.__dict__["_run_id"] = 42
    return message


def _setup(sample: Any, shares: Any, threshold: Any) -> Message:
    counts = {Key.SAMPLE_NUMBER: sample, Key.SHARE_NUMBER: shares, Key.THRESHOLD: threshold}
    return _message(Stage.SETUP, {**counts, **QUANTIZATION})


def _unmask(active: list[int], dead: list[int]) -> Message:
    return _message(Stage.UNMASK, {Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead})


KEYS = [b"k" * 32, b"l" * 32]
#: Messages are built in the test, once Flower's task identity is set.
Make = Callable[[], Message]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (lambda: _setup(1, 1, 1), "threshold 1 is below 2"),
        (lambda: _setup(3, 3, 1), "threshold 1 is below 2"),
        (lambda: _setup(3, 3, 0), "threshold 0 is below 2"),
        (lambda: _setup(3, 2, 3), "share count 2 is below the threshold 3"),
        (lambda: _setup(1, 3, 2), "samples 1 node"),
        (lambda: _setup(3, 3, True), "no whole number 'threshold'"),
        (lambda: _setup(3, 3, 2.0), "no whole number 'threshold'"),
        (lambda: _message(Stage.SETUP, QUANTIZATION), "no whole number"),
        (lambda: _message(Stage.SHARE_KEYS, {str(NODE): KEYS}), "keys of 1 node"),
        (lambda: _message(Stage.SHARE_KEYS, {}), "keys of 0 node"),
        (lambda: _unmask([NODE, 5], [NODE]), "names this node, which is answering, dead"),
        (lambda: _unmask([NODE, 5, 6], [5]), "both active and dead"),
        (lambda: _message(Stage.UNMASK, {Key.ACTIVE_NODE_ID_LIST: [NODE]}), "no node id list"),
    ],
    ids=[
        "alone",
        "threshold-1",
        "threshold-0",
        "shares-below-threshold",
        "sample-1",
        "bool-threshold",
        "float-threshold",
        "no-counts",
        "share-keys-alone",
        "share-keys-empty",
        "self-dead",
        "active-and-dead",
        "no-dead-list",
    ],
)
def test_weak_secagg_parameters_are_refused(message: Make, match: str) -> None:
    with pytest.raises(SecAggFloorError, match=match):
        check_secagg_floor(message())


@pytest.mark.parametrize(
    "message",
    [
        lambda: _setup(2, 3, 2),  # the seed app's settings with two participants
        lambda: _setup(3, 3, 2),
        lambda: _setup(10, 5, 5),
        lambda: _message(Stage.SHARE_KEYS, {str(NODE): KEYS, "5": [b"m" * 32, b"n" * 32]}),
        lambda: _message(
            Stage.COLLECT_MASKED_VECTORS, {Key.CIPHERTEXT_LIST: [], Key.SOURCE_LIST: []}
        ),
        lambda: _unmask([NODE, 5], []),
        lambda: _unmask([NODE, 5], [6]),
        lambda: Message(RecordDict(), NODE, "train"),  # not SecAgg+: Flower's mod decides
    ],
)
def test_sound_secagg_parameters_pass(message: Make) -> None:
    check_secagg_floor(message())


def test_a_lone_node_secagg_round_is_refused_and_recorded(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab, epochs=1, secagg=True), fab)
    reply = node.participant.deliver(COORDINATOR, "job-1", _setup(1, 1, 1))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "threshold 1 is below 2" in (reply.error.reason or "")
    [denied] = node.runtime.audit.events("access.denied")
    assert denied["peer"] == COORDINATOR and denied["outcome"] == "denied"
    assert "threshold 1" in denied["detail"]["reason"]
    assert denied["detail"]["secagg"] is True and denied["detail"]["secagg_stage"] == "setup"
    [replied] = node.runtime.audit.events("fl.reply")
    assert replied["outcome"] == "error"
    # The node made no keys: a lone-node share_keys that follows finds no setup to continue.
    keys = node.participant.deliver(
        COORDINATOR, "job-1", _message(Stage.SHARE_KEYS, {str(NODE): KEYS})
    )
    assert keys.has_error()


def test_a_sound_setup_reaches_flowers_mod(cluster: Cluster, fab: bytes) -> None:
    node = cluster.nodes["traffic"]
    node.participant.start_job(COORDINATOR, job_spec(fab, epochs=1, secagg=True), fab)
    reply = node.participant.deliver(COORDINATOR, "job-1", _setup(3, 3, 2))
    assert not reply.has_error(), reply.error.reason
    configs = reply.content.config_records[RECORD_KEY_CONFIGS]
    assert isinstance(configs[Key.PUBLIC_KEY_1], bytes)
    assert node.runtime.audit.events("access.denied") == []
