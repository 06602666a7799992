"""Deliver's limits: a stream is authorized on its first chunk, one peer holds at
most MAX_DELIVERS_PER_PEER streams, and a fault of this node is INTERNAL with no
internal text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from flwr.app import Message

from node.fl import wire
from node.fl.participant import Participant
from node.fl.service import MAX_DELIVERS_PER_PEER, FederatedServicer
from protocols.fednode.v1 import federated_pb2 as pb
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc
from tests.unit.fl.fl_fakes import COORDINATOR, Cluster, job_spec, train_message


class AbortedError(Exception):
    """What the fake context raises, as grpc's context.abort does."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AbortedError(code, details)


def _started(cluster: Cluster, fab: bytes) -> Participant:
    participant = cluster.nodes["traffic"].participant
    participant.start_job(COORDINATOR, job_spec(fab, epochs=1), fab)
    return participant


def _flood(job_id: str, read: list[int], count: int = 500) -> Iterator[pb.MessageChunk]:
    piece = b"\x00" * wire.CHUNK_SIZE
    for index in range(count):
        read.append(index)
        yield pb.MessageChunk(job_id=job_id, data=piece, last=index == count - 1)


@pytest.mark.parametrize(
    ("caller", "job_id"),
    [("some-other-department", "job-1"), (COORDINATOR, "no-such-job")],
    ids=["not-the-coordinator", "unknown-job"],
)
def test_a_stream_nobody_may_send_is_refused_after_its_first_chunk(
    cluster: Cluster, fab: bytes, caller: str, job_id: str
) -> None:
    servicer = FederatedServicer(_started(cluster, fab), caller=lambda _ctx: caller)
    read: list[int] = []
    with pytest.raises(AbortedError) as info:
        list(servicer.Deliver(_flood(job_id, read), FakeContext()))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.details == "no such job"
    assert read == [0]  # 1 MiB read, not 500


def test_an_unknown_job_over_grpc_is_not_found(cluster: Cluster) -> None:
    stub_channel = cluster.coordinator.peer_channel("traffic")
    read: list[int] = []
    with pytest.raises(grpc.RpcError) as info:
        list(pb_grpc.FederatedStub(stub_channel).Deliver(_flood("nope", read, 50), timeout=10))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_one_peer_holds_at_most_a_few_streams_at_once(cluster: Cluster, fab: bytes) -> None:
    participant = _started(cluster, fab)
    peer = {"who": COORDINATOR}
    servicer = FederatedServicer(participant, caller=lambda _ctx: peer["who"])
    release = threading.Event()
    opened = threading.Semaphore(0)
    data = wire.message_chunks(train_message(), "job-1")
    first = next(iter(data))

    def held() -> Iterator[pb.MessageChunk]:
        # The first chunk is authorized, then the stream stalls.
        yield pb.MessageChunk(job_id="job-1", data=first.data[:1], last=False)
        opened.release()
        release.wait(10)
        yield pb.MessageChunk(job_id="job-1", data=b"", last=False)

    results: list[BaseException | None] = []

    def run() -> None:
        try:
            list(servicer.Deliver(held(), FakeContext()))
            results.append(None)
        except BaseException as e:  # noqa: BLE001 -- the test inspects it
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(MAX_DELIVERS_PER_PEER)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert opened.acquire(timeout=10)
    try:
        read: list[int] = []
        with pytest.raises(AbortedError) as info:
            list(servicer.Deliver(_flood("job-1", read), FakeContext()))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert read == []  # refused before a single chunk is read
        # Another peer is not held back by this one's streams (it has no job: NOT_FOUND).
        peer["who"] = "health"
        with pytest.raises(AbortedError) as other:
            list(servicer.Deliver(_flood("job-1", []), FakeContext()))
        assert other.value.code == grpc.StatusCode.NOT_FOUND
        peer["who"] = COORDINATOR
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert len(results) == MAX_DELIVERS_PER_PEER
    # The held streams ended (malformed), and their slots are free again.
    reply_chunks = list(
        servicer.Deliver(wire.message_chunks(train_message(), "job-1"), FakeContext())
    )
    _, reply = wire.message_from_chunks(reply_chunks)
    assert not reply.has_error()


def test_a_fault_of_the_node_is_internal_without_its_text(
    cluster: Cluster, fab: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    participant = _started(cluster, fab)

    def broken(*_args: Any) -> Message:
        raise ValueError("secret internal detail")

    participant.deliver = broken  # type: ignore[method-assign,assignment]
    servicer = FederatedServicer(participant, caller=lambda _ctx: COORDINATOR)
    with pytest.raises(AbortedError) as info:
        list(servicer.Deliver(wire.message_chunks(train_message(), "job-1"), FakeContext()))
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details
    assert [r for r in caplog.records if "secret internal detail" in (r.exc_text or "")]


def test_a_fault_at_start_is_internal_without_its_text(cluster: Cluster, fab: bytes) -> None:
    participant = cluster.nodes["traffic"].participant

    def broken(*_args: Any) -> wire.JobStartedInfo:
        raise KeyError("secret internal detail")

    participant.start_job = broken  # type: ignore[method-assign,assignment]
    servicer = FederatedServicer(participant, caller=lambda _ctx: COORDINATOR)
    with pytest.raises(AbortedError) as info:
        servicer.StartJob(wire.job_start_parts(job_spec(fab, epochs=1), fab), FakeContext())
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details


def test_refused_streams_give_their_slot_back(cluster: Cluster) -> None:
    # Refused streams (unknown job) must give their slot back, or a peer locks itself out.
    servicer = FederatedServicer(cluster.nodes["traffic"].participant, caller=lambda _c: "x")
    for _ in range(MAX_DELIVERS_PER_PEER * 3):
        with pytest.raises(AbortedError) as info:
            list(servicer.Deliver(_flood("none", [], 2), FakeContext()))
        assert info.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "group_id",
    ["9" * 5000, "1234567890", "\u00b2", "\u0663"],
    ids=["5000-digits", "10-digits", "superscript-two", "arabic-indic-three"],
)
def test_a_group_id_that_is_no_round_number_is_refused_and_recorded(
    cluster: Cluster, fab: bytes, group_id: str
) -> None:
    participant = _started(cluster, fab)
    message = train_message()
    message.metadata.__dict__["_group_id"] = group_id
    stub = pb_grpc.FederatedStub(cluster.coordinator.peer_channel("traffic"))
    replies = list(stub.Deliver(wire.message_chunks(message, "job-1"), timeout=30))
    _, reply = wire.message_from_chunks(replies)
    reason = reply.error.reason or ""
    assert reply.has_error() and "is not a round number of 1-9 digits" in reason
    assert len(reason) < 200
    audit = cluster.nodes["traffic"].runtime.audit
    [denied] = audit.events("access.denied")
    assert denied["peer"] == COORDINATOR and "round" not in denied["detail"]
    assert audit.events("fl.task") == []
    assert participant.job_ids == ["job-1"]


def test_a_short_decimal_group_id_is_the_round(cluster: Cluster, fab: bytes) -> None:
    participant = _started(cluster, fab)
    message = train_message()
    message.metadata.__dict__["_group_id"] = "123456789"
    reply = participant.deliver(COORDINATOR, "job-1", message)
    assert not reply.has_error(), reply.error.reason
    [task_record] = cluster.nodes["traffic"].runtime.audit.events("fl.task")
    assert task_record["detail"]["round"] == 123456789
