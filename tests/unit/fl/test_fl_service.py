"""The Federated gRPC service: refusals map to status codes with short public messages."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from node.fl import wire
from node.fl.bundle import build_bundle
from node.fl.participant import MAX_JOBS_PER_COORDINATOR
from node.fl.service import FederatedServicer
from node.server.handlers import MALFORMED_MESSAGE, wrap_rpc_handler
from protocols.fednode.v1 import federated_pb2 as pb
from protocols.fednode.v1 import federated_pb2_grpc as pb_grpc
from tests.unit.fl.fl_fakes import APP, COORDINATOR, Cluster, agreement_id


def _spec(fab: bytes, **kw: object) -> wire.JobSpec:
    fields: dict[str, object] = {
        "job_id": "job-9",
        "run_id": 5,
        "node_id": 6,
        "fab_sha256": hashlib.sha256(fab).hexdigest(),
        "fab_size": len(fab),
        "agreement": agreement_id("1"),
        "dataset": "incidents",
        "run_config": {"secure-aggregation": False},
    }
    fields.update(kw)
    return wire.JobSpec(**fields)  # type: ignore[arg-type]


def _stub(cluster: Cluster) -> pb_grpc.FederatedStub:
    return pb_grpc.FederatedStub(cluster.coordinator.peer_channel("traffic"))


def test_start_deliver_end_over_grpc(cluster: Cluster) -> None:
    fab = build_bundle(APP).data
    started = wire.job_started_from_proto(
        _stub(cluster).StartJob(wire.job_start_parts(_spec(fab), fab), timeout=30)
    )
    assert started.job_id == "job-9" and "incident" in started.columns
    _stub(cluster).EndJob(wire.job_end_to_proto("job-9", "ok"), timeout=5)
    assert cluster.nodes["traffic"].participant.job_ids == []


@pytest.mark.parametrize(
    ("parts", "code", "text"),
    [
        (
            lambda fab: wire.job_start_parts(_spec(fab, fab_sha256="0" * 64), fab),
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed request: FAB bytes do not match",
        ),
        (
            lambda fab: wire.job_start_parts(_spec(b"x" + fab), b"x" + fab),
            grpc.StatusCode.PERMISSION_DENIED,
            "not approved",
        ),
        (
            lambda fab: iter([pb.JobStartPart(fab_chunk=b"x")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "before the job spec",
        ),
    ],
    ids=["hash-mismatch", "unapproved", "chunk-first"],
)
def test_start_job_refusals(
    cluster: Cluster, parts: object, code: grpc.StatusCode, text: str
) -> None:
    fab = build_bundle(APP).data
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster).StartJob(parts(fab), timeout=30)  # type: ignore[operator]
    assert info.value.code() == code and text in (info.value.details() or "")


def test_deliver_to_an_unknown_job_is_not_found(cluster: Cluster) -> None:
    chunks = [pb.MessageChunk(job_id="nope", data=b"", last=True)]
    with pytest.raises(grpc.RpcError) as info:
        list(_stub(cluster).Deliver(iter(chunks), timeout=5))
    assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_end_job_with_bad_outcome_is_invalid(cluster: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster).EndJob(pb.JobEnd(job_id="x", outcome="maybe"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_end_job_carries_its_reason_into_the_ledger(cluster: Cluster) -> None:
    fab = build_bundle(APP).data
    _stub(cluster).StartJob(wire.job_start_parts(_spec(fab), fab), timeout=30)
    too_long = pb.JobEnd(job_id="job-9", outcome="error", reason="x" * 501)
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster).EndJob(too_long, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 500" in (info.value.details() or "")
    node = cluster.nodes["traffic"]
    assert node.participant.job_ids == ["job-9"]  # a refused end ends nothing
    reason = "only 2 of 3 participants remain; health is unreachable"
    _stub(cluster).EndJob(wire.job_end_to_proto("job-9", "error", reason), timeout=5)
    [ended] = node.runtime.audit.events("fl.ended")
    assert ended["outcome"] == "error" and ended["detail"]["reason"] == reason
    assert node.participant.job_ids == []


def test_one_coordinator_runs_a_bounded_number_of_jobs_at_once(cluster: Cluster) -> None:
    """Each job holds a copy of the treated table: a coordinator cannot fill the disk."""
    fab = build_bundle(APP).data
    ids = [f"job-{n}" for n in range(MAX_JOBS_PER_COORDINATOR + 1)]
    for job_id in ids[:-1]:
        _stub(cluster).StartJob(wire.job_start_parts(_spec(fab, job_id=job_id), fab), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster).StartJob(wire.job_start_parts(_spec(fab, job_id=ids[-1]), fab), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"already runs {MAX_JOBS_PER_COORDINATOR} jobs" in (info.value.details() or "")
    node = cluster.nodes["traffic"]
    assert node.participant.job_ids == sorted(ids[:-1])
    jobs = node.runtime.config.data_dir / "fl" / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == sorted(ids[:-1])  # no copy for the refused
    # Once one ends, another may start.
    _stub(cluster).EndJob(wire.job_end_to_proto(ids[0], "ok"), timeout=5)
    _stub(cluster).StartJob(wire.job_start_parts(_spec(fab, job_id=ids[-1]), fab), timeout=30)
    assert node.participant.job_ids == sorted(ids[1:])


# --- a status the handler already set reaches the caller unchanged ---------------


class _Decoding(grpc.ServerInterceptor):  # type: ignore[misc]
    """Parses request bytes inside the handler, as the node's server does: a chunk that
    does not parse aborts the call with INVALID_ARGUMENT from within the handler."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return wrap_rpc_handler(continuation(details), lambda behavior, _: behavior, decode=True)


@pytest.fixture
def decoding_channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    participant = cluster.nodes["traffic"].participant
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[_Decoding()])
    pb_grpc.add_FederatedServicer_to_server(
        FederatedServicer(participant, caller=lambda _ctx: COORDINATOR), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(None)


#: Not a protobuf message: field 1 with wire type 7, which does not exist.
_GARBAGE = b"\x0f\xff\xff"


@pytest.mark.parametrize("method", ["StartJob", "Deliver"])
def test_a_malformed_chunk_reaches_the_caller_as_invalid_argument(
    decoding_channel: grpc.Channel, method: str
) -> None:
    path = f"/fednode.v1.Federated/{method}"
    if method == "StartJob":
        call: Any = decoding_channel.stream_unary(path)
    else:
        stream = decoding_channel.stream_stream(path)

        def call(requests: Iterator[bytes], timeout: float) -> Any:
            return list(stream(requests, timeout=timeout))

    with pytest.raises(grpc.RpcError) as info:
        call(iter([_GARBAGE]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == MALFORMED_MESSAGE


def test_a_fault_of_the_node_is_internal_with_no_internal_text(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("/var/lib/fednode/jobs: permission denied")

    monkeypatch.setattr(cluster.nodes["traffic"].participant, "start_job", broken)
    fab = build_bundle(APP).data
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster).StartJob(wire.job_start_parts(_spec(fab), fab), timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "federated job failed at the participant"
