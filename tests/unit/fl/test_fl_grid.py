"""NodeGrid with fake transports: concurrency, deadlines, and error replies shaped like Flower's."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.run import Run, RunNotRunningException

from node.fl import grid as grid_module
from node.fl.errors import NodesUnavailableError
from node.fl.grid import GridEvent, GrpcSender, NodeGrid

NODES = {11: "traffic", 12: "security", 13: "health"}


class Deadline(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED


def echo(department: str, message: Message, timeout: float) -> Message:
    content = RecordDict({"metrics": ConfigRecord({"from": department})})
    return Message(content, reply_to=message)


def _grid(send: object, **kw: object) -> NodeGrid:
    grid = NodeGrid(NODES, send, **kw)  # type: ignore[arg-type]
    grid.set_run(Run.create_empty(42))
    return grid


def _messages(kind: str = "train", nodes: tuple[int, ...] = (11, 12, 13)) -> list[Message]:
    return [Message(RecordDict(), n, kind, group_id="1") for n in nodes]


def test_replies_come_back_matched_to_their_messages() -> None:
    grid = _grid(echo)
    msgs = _messages()
    replies = list(grid.send_and_receive(msgs))
    assert sorted(r.metadata.src_node_id for r in replies) == [11, 12, 13]
    by_id = {m.metadata.message_id: m for m in msgs}
    for reply in replies:
        sent = by_id[reply.metadata.reply_to_message_id]
        assert reply.content["metrics"]["from"] == NODES[sent.metadata.dst_node_id]
    assert list(grid.pull_messages(list(by_id))) == []  # each reply is handed out once


def test_sends_to_all_nodes_at_once() -> None:
    # Each delivery waits for the other two: they only pass if all three are in
    # flight together (no wall-clock bound that a busy machine could miss).
    together = threading.Barrier(3, timeout=30)

    def meet(department: str, message: Message, timeout: float) -> Message:
        together.wait()
        return echo(department, message, timeout)

    replies = list(_grid(meet).send_and_receive(_messages()))
    assert len(replies) == 3 and not [r for r in replies if r.has_error()]


@pytest.mark.parametrize(
    ("failure", "code", "reason"),
    [
        (ConnectionError("refused"), ErrorCode.NODE_UNAVAILABLE, "health failed: refused"),
        (Deadline(), ErrorCode.REPLY_MESSAGE_UNAVAILABLE, "health did not reply within"),
    ],
)
def test_a_failed_node_becomes_an_error_reply_like_flowers(
    failure: Exception, code: int, reason: str
) -> None:
    def send(department: str, message: Message, timeout: float) -> Message:
        if department == "health":
            raise failure
        return echo(department, message, timeout)

    events: list[GridEvent] = []
    grid = _grid(send, on_reply=events.append)
    msgs = _messages()
    replies = list(grid.send_and_receive(msgs))
    assert len(replies) == 3
    errors = [r for r in replies if r.has_error()]
    assert len(errors) == 1
    error = errors[0]
    assert error.error.code == code and reason in (error.error.reason or "")
    assert error.metadata.src_node_id == SUPERLINK_NODE_ID == error.metadata.dst_node_id
    assert error.metadata.reply_to_message_id == msgs[2].metadata.message_id
    assert error.metadata.message_type == "train" and error.metadata.group_id == "1"
    assert sorted(grid.get_node_ids()) == [11, 12]
    assert grid.unavailable.keys() == {"health"}
    assert [e.department for e in events if e.error] == ["health"]


def test_the_message_deadline_bounds_a_hung_node() -> None:
    release = threading.Event()

    deadlines: list[float] = []

    def hang(department: str, message: Message, timeout: float) -> Message:
        deadlines.append(timeout)
        if department == "health" and not release.wait(timeout):
            raise Deadline()
        return echo(department, message, timeout)

    grid = _grid(hang, message_timeout=0.3)
    started = time.monotonic()
    replies = list(grid.send_and_receive(_messages()))
    release.set()
    # Every delivery carries the deadline; the wall-clock bound only catches a hang.
    assert len(deadlines) == 3 and max(deadlines) <= 0.3
    assert time.monotonic() - started < 20
    assert [r.error.code for r in replies if r.has_error()] == [ErrorCode.REPLY_MESSAGE_UNAVAILABLE]


def test_send_and_receive_timeout_returns_what_arrived() -> None:
    release = threading.Event()

    def hang(department: str, message: Message, timeout: float) -> Message:
        if department == "health":
            release.wait(30)
        return echo(department, message, timeout)

    grid = _grid(hang)
    # Long enough for two immediate replies on a busy machine; health answers only after.
    replies = list(grid.send_and_receive(_messages(), timeout=1.0))
    release.set()
    assert sorted(r.metadata.src_node_id for r in replies) == [11, 12]


@pytest.mark.parametrize(
    "forge",
    [
        lambda reply: reply.metadata.__dict__.update(_reply_to_message_id="other"),
        lambda reply: reply.metadata.__dict__.update(_src_node_id=12),
        lambda reply: reply.metadata.__dict__.update(_run_id=7),
    ],
    ids=["reply-to-other-message", "claims-other-node", "other-run"],
)
def test_a_reply_that_does_not_belong_to_the_message_is_refused(forge: object) -> None:
    def send(department: str, message: Message, timeout: float) -> Message:
        reply = echo(department, message, timeout)
        if department == "health":
            forge(reply)  # type: ignore[operator]
        return reply

    replies = list(_grid(send).send_and_receive(_messages()))
    errors = [r for r in replies if r.has_error()]
    assert len(errors) == 1 and "reply to another message" in (errors[0].error.reason or "")


def test_waiting_for_lost_nodes_ends_with_a_clear_error() -> None:
    def send(department: str, message: Message, timeout: float) -> Message:
        if department == "health":
            raise ConnectionError("gone")
        return echo(department, message, timeout)

    grid = _grid(send, node_wait_timeout=0.2)
    list(grid.send_and_receive(_messages()))
    assert len(list(grid.get_node_ids())) == 2
    time.sleep(0.3)
    with pytest.raises(
        NodesUnavailableError, match=r"only 2 of 3 .*health \(health failed: gone\)"
    ):
        grid.get_node_ids()
    assert grid.wait_failed(0)


def test_waiting_for_more_nodes_than_the_job_has_ends_with_a_clear_error() -> None:
    # Every participant is connected, but the strategy's minimum is higher:
    # no node can join a running job, so the wait would never end.
    grid = _grid(echo, node_wait_timeout=0.2)
    assert len(list(grid.get_node_ids())) == 3
    time.sleep(0.3)
    with pytest.raises(NodesUnavailableError, match=r"all 3 participants are connected") as e:
        grid.get_node_ids()
    assert "[strategy] to 3 or fewer" in (e.value.hint or "")
    assert grid.wait_failed(0)


def test_a_refused_participant_gets_a_hint_about_what_it_refused() -> None:
    grid = NodeGrid(
        {1: "traffic", 2: "security"},
        echo,
        refused={3: ("health", "the app is not approved here")},
        node_wait_timeout=0.2,
    )
    assert len(list(grid.get_node_ids())) == 2
    time.sleep(0.3)
    with pytest.raises(NodesUnavailableError, match="refused the job") as e:
        grid.get_node_ids()
    assert "fednode app approve" in (e.value.hint or "")


def test_a_participant_that_was_never_reached_is_not_said_to_have_refused() -> None:
    grid = NodeGrid(
        {1: "traffic"},
        echo,
        refused={3: ("health", "UNAVAILABLE: failed to connect to all addresses")},
        node_wait_timeout=0.2,
    )
    assert len(list(grid.get_node_ids())) == 1
    time.sleep(0.3)
    with pytest.raises(NodesUnavailableError, match=r"health \(could not be reached") as e:
        grid.get_node_ids()
    assert "refused" not in str(e.value)
    assert "once the participants are back" in (e.value.hint or "")
    assert "app approve" not in (e.value.hint or "")


def test_a_lost_node_is_not_contacted_again() -> None:
    calls: list[str] = []

    def send(department: str, message: Message, timeout: float) -> Message:
        calls.append(department)
        if department == "health":
            raise ConnectionError("gone")
        return echo(department, message, timeout)

    grid = _grid(send)
    list(grid.send_and_receive(_messages()))
    replies = list(grid.send_and_receive(_messages("evaluate")))
    assert calls.count("health") == 1
    assert [r.error.code for r in replies if r.has_error()] == [ErrorCode.NODE_UNAVAILABLE]


def test_messages_for_another_run_are_refused() -> None:
    grid = _grid(echo)
    grid.set_run(Run.create_empty(43))
    with pytest.raises(ValueError, match="run 42"):
        grid.push_messages(_messages())


def test_a_closed_grid_tells_flower_the_run_is_over() -> None:
    """Flower's legacy client manager polls the Grid every few seconds and stops on this."""
    grid = _grid(echo)
    grid.close()
    with pytest.raises(RunNotRunningException):
        grid.get_node_ids()
    with pytest.raises(RunNotRunningException):
        grid.push_messages(_messages())


class Cancelled(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED


class DeafCall:
    """A Deliver reply stream that never answers and ignores its deadline."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def __iter__(self) -> DeafCall:
        return self

    def __next__(self) -> object:
        self.cancelled.wait(30)
        raise Cancelled()

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class DeafChannel:
    """A channel (the surface a generated stub uses) whose Deliver calls are DeafCalls."""

    def __init__(self) -> None:
        self.calls: list[DeafCall] = []

    def stream_stream(self, *_args: object, **_kwargs: object) -> object:
        def deliver(_requests: object, timeout: float | None = None) -> DeafCall:
            self.calls.append(DeafCall())
            return self.calls[-1]

        return deliver

    stream_unary = unary_unary = stream_stream


def test_a_call_that_misses_its_deadline_is_cancelled_soon_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grid_module, "DEADLINE_GRACE_S", 0.1)
    channel = DeafChannel()
    send = GrpcSender(lambda _department: channel, "job-1")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        send("traffic", Message(RecordDict(), 11, "train"), 0.2)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert 0.3 <= time.monotonic() - started < 10
    assert channel.calls[0].cancelled.is_set()
