"""The consumer's decisions around a verified stream: what it records, keeps and refuses.

The provider is a fake channel that plays frames from the real sealer (or
forged ones, signed with the sender's key); the agreement is a real signed
agreement; the output, the exchange store and the opener are the real ones.
Envelope verification itself is tested in ``test_exchange_envelope.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.policy import agreements_of
from node.errors import AccessDenied, ExchangeError, NodeError
from node.exchange import consumer
from node.exchange.envelope import EnvelopeSealer
from node.exchange.errors import OutsideAgreementError
from node.exchange.sink import AtomicTableSink
from node.identity.keys import ed25519_public_raw, hpke_from_seed
from tests.unit.exchange import envelope_vectors as vectors

PROVIDER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(vectors.SENDER_SEED)
CONSUMER_KEY = ed25519.Ed25519PrivateKey.generate()
HPKE = hpke_from_seed(vectors.RECIPIENT_HPKE_SEED)
Frames = list[tuple[str, bytes]]


class Audit:
    """Records what the node would write to its ledger."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **fields: Any) -> int:
        self.entries.append((event, fields))
        return len(self.entries)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.entries if event == name]


class Unreachable(grpc.RpcError):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "the fake provider takes no receipts"


class Call:
    """A server stream that plays fixed frames."""

    def __init__(self, frames: Frames) -> None:
        self._frames = iter(frames)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return self._frames

    def cancel(self) -> None:
        pass


class Channel:
    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self.requests: list[Any] = []

    def unary_stream(self, *_: Any, **__: Any) -> Callable[..., Call]:
        def fetch(request: Any, timeout: float) -> Call:
            self.requests.append(request)
            return Call(self.frames)

        return fetch

    def unary_unary(self, *_: Any, **__: Any) -> Callable[..., Any]:
        def acknowledge(*_: Any, **__: Any) -> Any:
            raise Unreachable()

        return acknowledge


def agreement(*, columns: dict[str, Any] | None = None, valid_s: int = 3600) -> SignedAgreement:
    """A signed and countersigned agreement from health to statistics, valid from now."""
    now = int(time.time())
    doc = new_agreement(
        federation="test", provider="health", consumer="statistics", dataset="visits",
        purpose_code="X", purpose_text="", valid_from=now - 5, valid_until=now + valid_s,
        modes=["transfer"], columns=columns or {"district": {"treatment": "plain"}}, created=now,
    )  # fmt: skip
    return SignedAgreement.sign(doc, PROVIDER_KEY).countersign(CONSUMER_KEY)


def honest_frames(signed: SignedAgreement, table: pa.Table, dataset: str = "visits") -> Frames:
    sealer = EnvelopeSealer(
        signing_key=PROVIDER_KEY, sender="health", recipient="statistics",
        recipient_hpke_public=HPKE.public_bytes, agreement=signed.id, dataset=dataset,
        schema=table.schema, chunk_limit=4096,
    )  # fmt: skip
    frames: Frames = [("header", sealer.header)]
    for batch in table.to_batches(max_chunksize=100):
        frames += [("chunk", c) for c in sealer.add(batch)]
    final, trailer = sealer.finish()
    return [*frames, ("chunk", final), ("trailer", trailer)]


def runtime(tmp_path: Path, signed: SignedAgreement, frames: Frames) -> Any:
    """A consumer node holding ``signed`` as active, whose provider plays ``frames``."""
    entry = SimpleNamespace(ed25519_public=ed25519_public_raw(PROVIDER_KEY))
    channel = Channel(frames)
    # Only what the consumer reads of a NodeRuntime.
    node: Any = SimpleNamespace(
        department="statistics",
        hpke=HPKE,
        signing_key=CONSUMER_KEY,
        directory=SimpleNamespace(get=lambda department: entry),
        config=SimpleNamespace(data_dir=tmp_path),
        extensions={},
        audit=Audit(),
        peer_channel=lambda department: channel,
    )
    agreements_of(node).activate(signed)
    return node


DISTRICTS = pa.table({"district": [f"d{i}" for i in range(500)]})


def fetch(node: Any, signed: SignedAgreement, out: Path, **options: Any) -> Any:
    return consumer.fetch_share(node, provider="health", agreement_id=signed.id, out=out, **options)


def test_an_honest_share_is_kept_and_recorded(
    tmp_path: Path,
) -> None:
    signed = agreement()
    node = runtime(tmp_path, signed, honest_frames(signed, DISTRICTS))
    result = fetch(node, signed, tmp_path / "out.parquet")
    assert result.rows == 500 and not result.receipt_acknowledged
    assert pq.read_table(tmp_path / "out.parquet").equals(DISTRICTS)
    assert [e["columns"] for e in node.audit.events("share.received")] == [["district"]]


def test_an_unexpected_error_is_recorded_as_a_failed_share_and_wrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AtomicTableSink, message: Any) -> None:
        raise RuntimeError("the writer broke")

    monkeypatch.setattr(AtomicTableSink, "write", broken)
    signed = agreement()
    node = runtime(tmp_path, signed, honest_frames(signed, DISTRICTS))
    with pytest.raises(ExchangeError, match="RuntimeError: the writer broke") as raised:
        fetch(node, signed, tmp_path / "out.parquet")
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert isinstance(raised.value, NodeError)
    [failed] = node.audit.events("share.failed")
    assert "the writer broke" in failed["detail"]["reason"]
    assert "share_id" in failed["detail"]
    assert list(tmp_path.glob("*.parquet")) == [] and list(tmp_path.glob(".*partial")) == []


VISITS_COLUMNS = {
    "person_id": {"treatment": "pseudonymize"},
    "age": {"treatment": "generalize", "params": {"band": 10}},
    "seen": {"treatment": "generalize", "params": {"to": "hour"}},
    "district": {"treatment": "plain"},
    "diagnosis": {"treatment": "drop"},
}
SHARED = {
    "person_id": pa.array(["3f" * 32, "a1" * 32]),
    "age": pa.array(["30-39", "40-49"]),
    "seen": pa.array([0, 3_600_000_000], pa.timestamp("us")),
    "district": pa.array(["d1", "d2"]),
}


def shared_except(**changes: pa.Array | None) -> pa.Table:
    columns = {**SHARED, **changes}
    return pa.table({k: v for k, v in columns.items() if v is not None})


@pytest.mark.parametrize(
    ("table", "dataset", "asked", "match"),
    [
        (
            shared_except(income=pa.array([120000, 98000])),
            "visits",
            None,
            "the share holds columns agreement agr-[0-9a-f]+ does not share: income$",
        ),
        (
            shared_except(diagnosis=pa.array(["x", "y"])),
            "visits",
            None,
            "does not share: diagnosis$",
        ),
        (shared_except(), "payroll", None, "the share is of dataset 'payroll'; agreement"),
        (
            shared_except(),
            "visits",
            ["district", "age"],
            "not the ones asked for; not asked for: person_id, seen$",
        ),
        (
            shared_except(age=None),
            "visits",
            None,
            "not the ones asked for; missing: age$",
        ),
        (
            shared_except(person_id=pa.array([1, 2])),
            "visits",
            None,
            r"column 'person_id' arrived as int64, which its treatment \(pseudonymize\)",
        ),
        (
            shared_except(age=pa.array([31, 42], pa.int32())),
            "visits",
            None,
            r"column 'age' arrived as int32, which its treatment \(generalize\)",
        ),
        (
            shared_except(seen=pa.array(["09:00", "10:00"])),
            "visits",
            None,
            r"column 'seen' arrived as string, which its treatment \(generalize\)",
        ),
        (
            pa.Table.from_arrays(
                [SHARED["district"], SHARED["district"]], names=["district", "district"]
            ),
            "visits",
            ["district"],
            "the share names columns twice: district$",
        ),
    ],
    ids=[
        "column-not-in-agreement",
        "dropped-column",
        "other-dataset",
        "more-than-asked",
        "fewer-than-shared",
        "pseudonym-not-text",
        "band-not-text",
        "time-not-temporal",
        "duplicate-column",
    ],
)
def test_a_share_that_is_not_what_the_agreement_shares_or_was_asked_is_refused(
    tmp_path: Path,
    table: pa.Table,
    dataset: str,
    asked: list[str] | None,
    match: str,
) -> None:
    signed = agreement(columns=VISITS_COLUMNS)
    node = runtime(tmp_path, signed, honest_frames(signed, table, dataset=dataset))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutsideAgreementError, match=match):
        fetch(node, signed, out / "x.parquet", columns=asked)
    [failed] = node.audit.events("share.failed")
    assert re.search(match, failed["detail"]["reason"])
    assert node.audit.events("share.received") == []
    assert list(out.iterdir()) == []


def test_asked_columns_arrive_in_the_providers_order(
    tmp_path: Path,
) -> None:
    signed = agreement(columns=VISITS_COLUMNS)
    table = shared_except().select(["age", "district"])
    node = runtime(tmp_path, signed, honest_frames(signed, table))
    result = fetch(node, signed, tmp_path / "out.parquet", columns=["district", "age"])
    assert result.rows == 2
    assert pq.read_table(tmp_path / "out.parquet").column_names == ["age", "district"]


def test_a_share_whose_agreement_is_revoked_before_it_completes_is_not_kept(
    tmp_path: Path,
) -> None:
    signed = agreement()
    node = runtime(tmp_path, signed, [])
    frames = honest_frames(signed, DISTRICTS)
    assert len(frames) > 4

    def revoked_midway() -> Iterator[tuple[str, bytes]]:
        yield from frames[:3]
        agreements_of(node).revoke(signed.id, "withdrawn")
        yield from frames[3:]

    node.peer_channel("health").frames = revoked_midway()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AccessDenied, match=f"agreement {signed.id} was revoked at"):
        fetch(node, signed, out / "x.parquet")
    [failed] = node.audit.events("share.failed")
    assert "was revoked" in failed["detail"]["reason"]
    assert node.audit.events("share.received") == []
    assert list(out.iterdir()) == []


def test_a_share_completing_after_its_agreement_expired_is_not_kept(tmp_path: Path) -> None:
    signed = agreement(valid_s=2)
    node = runtime(tmp_path, signed, [])
    frames = honest_frames(signed, DISTRICTS)

    def expired_midway() -> Iterator[tuple[str, bytes]]:
        yield from frames[:3]
        # The provider ignores the end of the agreement; the consumer must not.
        time.sleep(max(0.0, signed.valid_until - time.time()) + 0.1)
        yield from frames[3:]

    node.peer_channel("health").frames = expired_midway()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AccessDenied, match=f"agreement {signed.id} expired at"):
        fetch(node, signed, out / "x.parquet")
    assert "expired" in node.audit.events("share.failed")[-1]["detail"]["reason"]
    assert node.audit.events("share.received") == []
    assert list(out.iterdir()) == []
