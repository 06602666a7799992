"""The Federated wire format: round trips, the 4 MiB bound, and every malformed stream refused."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from node.fl import wire
from node.fl.errors import UnknownJobError, WireError
from protocols.fednode.v1 import federated_pb2 as pb

FAB = b"PK" + bytes(range(256)) * 9000  # > 2 chunks


def _spec(fab: bytes = FAB, **kw: object) -> wire.JobSpec:
    fields: dict[str, object] = {
        "job_id": "job-1",
        "run_id": 7,
        "node_id": 99,
        "fab_sha256": hashlib.sha256(fab).hexdigest(),
        "fab_size": len(fab),
        "agreement": "agr-" + "1" * 32,
        "dataset": "incidents",
        "run_config": {"num-server-rounds": 3, "lr": 0.5, "name": "x", "flag": True},
        "secagg": True,
        "dp": wire.DpConfig(1.0, 1.0, 5.0, 1e-5),
        "idle_limit": 90.5,
    }
    fields.update(kw)
    return wire.JobSpec(**fields)  # type: ignore[arg-type]


def test_job_start_round_trip_in_bounded_chunks() -> None:
    parts = list(wire.job_start_parts(_spec(), FAB))
    assert len(parts) == 4
    assert all(p.ByteSize() < 4 << 20 for p in parts)
    spec, fab = wire.job_start_from_parts(parts)
    assert spec == _spec() and fab == FAB


def test_a_spec_from_a_coordinator_without_idle_limits_has_no_limit() -> None:
    parts = list(wire.job_start_parts(_spec(), FAB))
    parts[0].spec.ClearField("idle_limit")
    spec, _ = wire.job_start_from_parts(parts)
    assert spec.idle_limit == 0.0


def _with(
    parts: list[pb.JobStartPart], fn: Callable[[list[pb.JobStartPart]], object]
) -> list[pb.JobStartPart]:
    fn(parts)
    return parts


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p.pop(0), "FAB bytes before the job spec"),
        (lambda p: p.pop(), "truncated"),
        (lambda p: p.append(pb.JobStartPart(fab_chunk=b"x")), "longer than the announced"),
        (lambda p: p.insert(1, pb.JobStartPart(spec=p[0].spec)), "second job spec"),
        (lambda p: p.append(pb.JobStartPart()), "empty part"),
        (
            lambda p: p.__setitem__(1, pb.JobStartPart(fab_chunk=b"Z" + p[1].fab_chunk[1:])),
            "SHA-256",
        ),
        (lambda p: setattr(p[0].spec, "version", 2), "version 2 is not supported"),
        (lambda p: setattr(p[0].spec, "job_id", "../../etc"), "job id must be"),
        (lambda p: setattr(p[0].spec, "fab_sha256", "ABC"), "64 lower-case hex"),
        (lambda p: setattr(p[0].spec, "agreement", "agr-1"), "names no agreement id: 'agr-1'"),
        (lambda p: setattr(p[0].spec, "agreement", "a" * 100_000), r"\(100002 characters\)"),
        (lambda p: setattr(p[0].spec, "dataset", "../etc"), "names no dataset"),
        (lambda p: setattr(p[0].spec, "run_config_json", "[1]"), "JSON object"),
        (lambda p: setattr(p[0].spec, "run_config_json", '{"a": [1]}'), "bool, int, float or str"),
        (lambda p: setattr(p[0].spec.dp, "epsilon", 0.0), "epsilon > 0"),
        (lambda p: setattr(p[0].spec, "fab_size", 1 << 30), "exceeds"),
        (lambda p: setattr(p[0].spec, "idle_limit", -1.0), "idle_limit must be a finite number"),
        (lambda p: setattr(p[0].spec, "idle_limit", float("nan")), "idle_limit must be"),
        (lambda p: setattr(p[0].spec, "idle_limit", float("inf")), "idle_limit must be"),
        (lambda p: p.clear(), "no job spec"),
    ],
)
def test_malformed_job_start_is_refused(
    mutate: Callable[[list[pb.JobStartPart]], object], match: str
) -> None:
    parts = _with(list(wire.job_start_parts(_spec(), FAB)), mutate)
    with pytest.raises(WireError, match=match):
        wire.job_start_from_parts(parts)


def _message(size: int) -> Message:
    arrays = ArrayRecord([np.arange(size, dtype=np.float64)])
    message = Message(RecordDict({"arrays": arrays}), 5, "train", group_id="2")
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def test_large_messages_travel_in_chunks_below_4_mib() -> None:
    message = _message(1_500_000)  # 12 MB of float64
    chunks = list(wire.message_chunks(message, "job-1"))
    assert len(chunks) == 12 and all(c.ByteSize() < 4 << 20 for c in chunks)
    assert [c.last for c in chunks].count(True) == 1 and chunks[-1].last
    job_id, back = wire.message_from_chunks(chunks)
    assert job_id == "job-1"
    assert back.metadata.message_id == message.metadata.message_id
    np.testing.assert_array_equal(
        back.content.array_records["arrays"].to_numpy_ndarrays()[0], np.arange(1_500_000)
    )


@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 200_000), job=st.text("abc-_9", min_size=1, max_size=12))
def test_message_round_trip(size: int, job: str) -> None:
    message = _message(size)
    job_id, back = wire.message_from_chunks(wire.message_chunks(message, job))
    assert job_id == job and wire.message_digest(back) == wire.message_digest(message)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda c: c.clear(), "empty"),
        (lambda c: c.pop(), "without its final chunk"),
        (
            lambda c: c.append(pb.MessageChunk(job_id="job-1", data=b"x", last=True)),
            "after its final",
        ),
        (lambda c: setattr(c[1], "job_id", "other"), "changes job id"),
        (
            lambda c: c.__setitem__(
                0, pb.MessageChunk(job_id="job-1", data=b"\xff\xff", last=False)
            ),
            "not a valid",
        ),
    ],
)
def test_malformed_message_stream_is_refused(
    mutate: Callable[[list[pb.MessageChunk]], object], match: str
) -> None:
    chunks = list(wire.message_chunks(_message(300_000), "job-1"))
    mutate(chunks)
    with pytest.raises(WireError, match=match):
        wire.message_from_chunks(chunks)


def test_the_stream_is_authorized_on_its_first_chunk_before_more_is_read() -> None:
    read: list[int] = []

    def stream() -> Iterator[pb.MessageChunk]:
        for index in range(1000):
            read.append(index)
            yield pb.MessageChunk(job_id="not-yours", data=b"\x00" * 1024, last=index == 999)

    def authorize(job_id: str) -> None:
        raise UnknownJobError(f"no job {job_id!r} here")

    with pytest.raises(UnknownJobError, match="no job 'not-yours' here"):
        wire.message_from_chunks(stream(), authorize)
    assert read == [0]


def test_authorize_sees_the_job_id_once() -> None:
    seen: list[str] = []
    chunks = list(wire.message_chunks(_message(300_000), "job-1"))
    assert len(chunks) > 1
    job_id, _ = wire.message_from_chunks(chunks, seen.append)
    assert job_id == "job-1" and seen == ["job-1"]


def test_a_message_above_the_limit_is_refused_once_it_passes_it() -> None:
    assert wire.MAX_MESSAGE_SIZE == 128 << 20
    read: list[int] = []
    piece = b"\x00" * wire.CHUNK_SIZE

    def stream() -> Iterator[pb.MessageChunk]:
        for index in range(wire.MAX_MESSAGE_SIZE // wire.CHUNK_SIZE + 10):
            read.append(index)
            yield pb.MessageChunk(job_id="job-1", data=piece, last=False)

    with pytest.raises(WireError, match="exceeds the 134217728-byte limit"):
        wire.message_from_chunks(stream())
    assert len(read) == wire.MAX_MESSAGE_SIZE // wire.CHUNK_SIZE + 1


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_escape_as_bare_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.message_from_chunks([pb.MessageChunk(job_id="j", data=data, last=True)])


def test_dp_noise_follows_the_gaussian_mechanism() -> None:
    dp = wire.DpConfig(clipping_norm=1.0, sensitivity=2.0, epsilon=4.0, delta=1e-5)
    assert dp.noise_stddev == pytest.approx(2.0 * np.sqrt(2 * np.log(1.25 / 1e-5)) / 4.0)
    record = dp.to_record()
    assert all(isinstance(v, str) for v in record.values())  # ledger JSON carries no floats


def test_dp_noise_below_the_clipping_norm_is_flagged_with_its_real_epsilon() -> None:
    weak = wire.DpConfig(clipping_norm=25.0, sensitivity=0.05, epsilon=5.0, delta=1e-5)
    assert weak.effective_epsilon == pytest.approx(2500.0)
    assert "epsilon 2500, not 5" in (weak.weakness() or "")
    assert weak.to_record()["effective_epsilon"] == "2500.0"
    sound = wire.DpConfig(clipping_norm=1.0, sensitivity=1.0, epsilon=5.0, delta=1e-5)
    assert sound.weakness() is None and sound.effective_epsilon == 5.0


@pytest.mark.parametrize("sensitivity", [0.0, -0.0, -1.0])
def test_dp_without_noise_is_refused(sensitivity: float) -> None:
    # Zero sensitivity adds no noise at all, yet the ledger would record DP.
    with pytest.raises(WireError, match="sensitivity must be > 0"):
        wire.DpConfig(clipping_norm=1.0, sensitivity=sensitivity, epsilon=5.0, delta=1e-5)


def test_a_job_spec_with_zero_dp_sensitivity_is_refused() -> None:
    dp = wire.DpConfig(clipping_norm=1.0, sensitivity=1.0, epsilon=5.0, delta=1e-5)
    parts = list(wire.job_start_parts(_spec(b"fab", dp=dp), b"fab"))
    parts[0].spec.dp.sensitivity = 0.0
    with pytest.raises(WireError, match="sensitivity must be > 0"):
        wire.job_start_from_parts(parts)


def test_job_end_carries_its_reason() -> None:
    proto = wire.job_end_to_proto("job-1", "error", "cancelled: the launcher went away")
    assert wire.job_end_from_proto(proto) == wire.JobEndInfo(
        "job-1", "error", "cancelled: the launcher went away"
    )
    # A coordinator that predates reasons sends none; the end still counts.
    assert wire.job_end_from_proto(pb.JobEnd(job_id="j", outcome="ok")).reason == ""


def test_a_long_or_multi_line_reason_is_cut_to_one_bounded_line() -> None:
    reason = wire.end_reason("Traceback:\n  line\t1\r\x00" + "\U0001f600" * 10_000)
    assert reason.startswith("Traceback: line 1 \U0001f600")
    assert len(reason) == wire.MAX_END_REASON and reason.endswith("\u2026")
    proto = wire.job_end_to_proto("job-1", "error", "x\n" * 100_000)
    assert proto.ByteSize() < 4 << 20 and wire.job_end_from_proto(proto).reason.startswith("x x")


@pytest.mark.parametrize(
    ("proto", "match"),
    [
        (pb.JobEnd(job_id="j", outcome="maybe"), "outcome must be 'ok' or 'error', got 'maybe'"),
        (pb.JobEnd(job_id="j", outcome="error", reason="r" * 501), "501 characters; at most 500"),
        (pb.JobEnd(job_id="j", outcome="error", reason="two\nlines"), "control characters"),
        (pb.JobEnd(job_id="j", outcome="error", reason="bell\x07"), "control characters"),
        (pb.JobEnd(job_id="j", outcome="error", reason="c1\x85"), "control characters"),
    ],
    ids=["outcome", "too-long", "newline", "bell", "c1"],
)
def test_malformed_job_end_is_refused(proto: pb.JobEnd, match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.job_end_from_proto(proto)


def test_exactly_500_characters_of_reason_pass() -> None:
    proto = pb.JobEnd(job_id="j", outcome="error", reason="\u00e9" * 500)
    assert len(wire.job_end_from_proto(proto).reason) == 500


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_makes_a_reason_the_receiver_accepts(text: str) -> None:
    reason = wire.job_end_from_proto(wire.job_end_to_proto("j", "error", text)).reason
    assert len(reason) <= wire.MAX_END_REASON
    assert reason == wire.end_reason(reason)  # cleaning is idempotent
