"""Erasing a revocation reason: from the agreement store's bytes, with the ledger's
copy, idempotently, and finished by running it again after a cut-short run."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.canonical import loads
from ledger.errors import StorageError
from ledger.store import LedgerStore
from ledger.witness import WitnessState
from node.agreements import workflow
from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.policy import agreements_of
from node.agreements.store import AgreementStore
from node.audit import admin as audit_admin
from node.audit.admin import ledger_erase
from node.audit.recorder import AuditRecorder
from node.cli import exit_codes
from node.errors import AgreementError, BusyError, RequestError
from node.identity.directory import Directory
from node.timefmt import utc_text

PROVIDER = ed25519.Ed25519PrivateKey.generate()
CONSUMER = ed25519.Ed25519PrivateKey.generate()
NAME = b"W. Zhang"
REASON = "analyst W. Zhang exported rows outside the purpose"


def _signed(**over: Any) -> SignedAgreement:
    now = int(time.time())
    doc = new_agreement(
        federation="gov",
        provider="health",
        consumer="statistics",
        dataset="visits",
        purpose_code="STAT-7",
        purpose_text="monthly statistics",
        valid_from=now - 10,
        valid_until=now + 3600,
        modes=["transfer"],
        columns={"district": {"treatment": "plain"}},
        created=now,
        **over,
    )
    return SignedAgreement.sign(doc, PROVIDER)


def _active(store: AgreementStore) -> str:
    signed = _signed()
    store.add_proposed(signed)
    store.activate(signed.countersign(CONSUMER))
    return signed.id


def _file_bytes(path: Path) -> bytes:
    """The database file and its WAL, as a raw read of the disk would see them."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_an_erased_reason_is_gone_from_the_file_and_shown_as_erased(tmp_path: Path) -> None:
    path = tmp_path / "agreements.db"
    store = AgreementStore(path)
    agreement = _active(store)
    store.revoke(agreement, REASON)
    assert NAME in _file_bytes(path)
    before = time.time()
    erased = store.erase_reason(agreement)
    assert NAME not in _file_bytes(path)
    assert erased.state == "revoked" and erased.reason is None
    assert erased.revoked_at is not None and erased.reason_erased is not None
    assert erased.reason_erased >= int(before)
    shown = erased.to_json()
    assert shown["reason"] is None and shown["reason_erased_at"] == erased.reason_erased
    # Run again (an erasure cut short is finished this way): nothing changes.
    again = store.erase_reason(agreement)
    assert again == erased
    store.close()
    assert AgreementStore(path).get(agreement) == erased


def test_an_old_copy_in_free_pages_is_erased_too(tmp_path: Path) -> None:
    # An SQLite built without secure delete leaves deleted content in free
    # pages, as rows moved by earlier writes may have left the reason.
    path = tmp_path / "agreements.db"
    store = AgreementStore(path)
    agreement = _active(store)
    store.revoke(agreement, REASON)
    store.close()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA secure_delete=0")
    raw.execute("CREATE TABLE earlier (text TEXT)")
    raw.execute("INSERT INTO earlier VALUES (?)", (REASON * 100,))
    raw.execute("DROP TABLE earlier")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    assert _file_bytes(path).count(NAME) > 1  # the row's copy, and free pages' copies
    store = AgreementStore(path)
    store.erase_reason(agreement)
    assert NAME not in _file_bytes(path)


def test_a_store_from_before_erasure_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "agreements.db"
    signed = _signed()
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE agreements (
            id TEXT PRIMARY KEY, provider TEXT NOT NULL, consumer TEXT NOT NULL,
            dataset TEXT NOT NULL, state TEXT NOT NULL, signed BLOB NOT NULL,
            pseudonym_key BLOB, updated INTEGER NOT NULL, revoked_at INTEGER, reason TEXT);
        """
    )
    old.execute(
        "INSERT INTO agreements VALUES (?,?,?,?,'revoked',?,NULL,1,1,?)",
        (signed.id, "health", "statistics", "visits", signed.to_bytes(), REASON),
    )
    old.close()
    store = AgreementStore(path)
    record = store.get(signed.id)
    assert record.reason == REASON and record.reason_erased is None
    assert store.erase_reason(signed.id).reason is None
    assert NAME not in _file_bytes(path)
    store.close()
    # The upgrade raised the version, so a fednode reading version 1 refuses the file
    # instead of inserting rows one column short.
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
    raw.close()


@pytest.mark.parametrize(
    ("revoked", "agreement", "match"),
    [
        (False, None, "is active, it has no reason"),
        (True, "agr-" + "0" * 32, "no agreement 'agr-0+' on this node"),
    ],
)
def test_only_a_stored_revoked_agreement_has_a_reason_to_erase(
    tmp_path: Path, revoked: bool, agreement: str | None, match: str
) -> None:
    store = AgreementStore(tmp_path / "agreements.db")
    held = _active(store)
    if revoked:
        store.revoke(held, REASON)
    with pytest.raises(AgreementError, match=match):
        store.erase_reason(agreement or held)


def test_a_second_revocation_names_the_first_in_utc(tmp_path: Path) -> None:
    store = AgreementStore(tmp_path / "agreements.db")
    agreement = _active(store)
    first = store.revoke(agreement, "purpose ended")
    with pytest.raises(AgreementError, match="already revoked at ") as refused:
        store.revoke(agreement, "again")
    assert utc_text(first.revoked_at) in str(refused.value)


# --- through the ledger: the ledger.erase admin command ----------------------


def _no_directory() -> Directory:
    raise AssertionError("erasure needs no federation directory")


@pytest.fixture
def node(provider_runtime: Any, tmp_path: Path) -> Any:
    """health with a real ledger and an agreement revoked with a reason that names someone."""
    ledger = LedgerStore(tmp_path / "ledger" / "ledger.sqlite", "health")
    provider_runtime.audit = AuditRecorder(
        ledger,
        federation="gov",
        department="health",
        signing_key=provider_runtime.signing_key,
        directory=_no_directory,
        witness_state=WitnessState(tmp_path / "ledger" / "witness.sqlite"),
    )
    agreement = _active(agreements_of(provider_runtime))
    workflow.revoke(provider_runtime, agreement, REASON)
    yield provider_runtime
    provider_runtime.audit.close()


def _entries(runtime: Any, event: str) -> list[dict[str, Any]]:
    store = runtime.audit.store
    return [e for e in (loads(b) for _, b, _ in store.iter_entries()) if e["event"] == event]


def _erase(runtime: Any, seq: int, field: str = "detail.reason") -> dict[str, Any]:
    return ledger_erase(runtime, {"seq": seq, "field": field}, lambda _: None)


def test_erasing_the_ledgers_reason_erases_the_stores(node: Any) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    result = _erase(node, revoked["seq"])
    assert result["agreement_reason_erased"] and not result["already_erased"]
    assert result["other_party"] == "statistics"
    assert result["agreement"] == revoked["agreement"]
    assert agreements_of(node).get(revoked["agreement"]).reason is None
    with pytest.raises(StorageError, match="holds no stored value"):
        node.audit.store.reveal(revoked["seq"], "detail.reason")
    [record] = _entries(node, "ledger.erased")
    assert record["detail"] == {
        "seq": revoked["seq"],
        "field": "detail.reason",
        "agreement_reason": "erased",
    }
    # Running it again is not an error, and is recorded as a repeat.
    assert _erase(node, revoked["seq"])["already_erased"]
    assert _entries(node, "ledger.erased")[-1]["detail"]["already_erased"] is True


def test_an_erasure_cut_short_before_the_ledger_is_finished_by_running_it_again(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    [revoked] = _entries(node, "agreement.revoked")

    def power_cut(*_: Any, **__: Any) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(LedgerStore, "erase", power_cut)
        with pytest.raises(RuntimeError):
            _erase(node, revoked["seq"])
    # The store's copy went first; the ledger still holds its value ...
    assert agreements_of(node).get(revoked["agreement"]).reason is None
    assert node.audit.store.reveal(revoked["seq"], "detail.reason") == REASON
    # ... until the operator runs the command again.
    assert not _erase(node, revoked["seq"])["already_erased"]
    with pytest.raises(StorageError):
        node.audit.store.reveal(revoked["seq"], "detail.reason")


def test_an_erasure_and_its_record_commit_together_through_the_admin_command(
    node: Any,
) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    size = node.audit.store.size
    result = _erase(node, revoked["seq"])
    # The record is the very next entry, in the same commit as the deletion.
    assert result["recorded_as"] == size and node.audit.store.size == size + 1
    [record] = _entries(node, "ledger.erased")
    assert record["seq"] == size
    with pytest.raises(StorageError, match="holds no stored value"):
        node.audit.store.reveal(revoked["seq"], "detail.reason")


def test_an_erasure_whose_record_cannot_be_written_erases_nothing_from_the_ledger(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    size = node.audit.store.size

    def disk_full(*_: Any, **__: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(LedgerStore, "_write_staged", disk_full)
        with pytest.raises(StorageError, match="disk is full"):
            _erase(node, revoked["seq"])
    assert node.audit.store.size == size
    assert _entries(node, "ledger.erased") == []
    assert node.audit.store.reveal(revoked["seq"], "detail.reason") == REASON
    # Running it again erases the value and records it, once.
    assert not _erase(node, revoked["seq"])["already_erased"]
    [record] = _entries(node, "ledger.erased")
    assert record["detail"]["seq"] == revoked["seq"] and "already_erased" not in record["detail"]


@pytest.mark.parametrize(
    ("event", "field", "match"),
    [
        (
            "agreement.revoked",
            "detail.notice",
            r"entry \d+ \(agreement.revoked\) has no committed field 'detail.notice'; "
            r"its committed fields are detail.reason",
        ),
        (
            "share.sent",
            "detail.reason",
            "has no committed field 'detail.reason'; it commits no fields",
        ),
    ],
)
def test_a_field_that_holds_no_value_is_refused_and_nothing_is_erased(
    node: Any, event: str, field: str, match: str
) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    node.audit.record("share.sent", agreement=revoked["agreement"], detail={"reason": "x"})
    [entry] = _entries(node, event)
    with pytest.raises(RequestError, match=match):
        _erase(node, entry["seq"], field)
    assert agreements_of(node).get(revoked["agreement"]).reason == REASON
    assert _entries(node, "ledger.erased") == []


def test_fields_that_hold_no_revocation_reason_leave_the_store_alone(node: Any) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    for entry, field in [
        ({**revoked, "event": "share.sent"}, "detail.reason"),
        (revoked, "detail.other"),
        ({**revoked, "agreement": "agr-" + "0" * 32}, "detail.reason"),
        ({**revoked, "agreement": None}, "detail.reason"),
    ]:
        assert workflow.erase_reason(node, entry, field) is None
    assert agreements_of(node).get(revoked["agreement"]).reason == REASON
    sent = {"event": "agreement.revocation_sent", "agreement": revoked["agreement"]}
    erased = workflow.erase_reason(node, sent, "detail.notice")
    assert erased is not None and erased.reason is None


# --- another process reading the files: wait, then exit code 11 (busy) ----------


def _reader_holding_a_snapshot(path: Path) -> sqlite3.Connection:
    """A second process's view of ``path`` (an sqlite3 shell, a backup) that holds an old
    snapshot, which keeps the write-ahead log from being emptied."""
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return reader


@pytest.fixture
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_admin, "ERASE_TRIES", 3)
    monkeypatch.setattr(audit_admin, "ERASE_PAUSE_S", 0.05)


@pytest.mark.usefixtures("quick_waits")
def test_a_ledger_reader_that_stays_makes_the_erasure_busy_and_running_it_again_finishes(
    node: Any,
) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    events: list[dict[str, Any]] = []
    reader = _reader_holding_a_snapshot(node.audit.store.path)
    try:
        with pytest.raises(BusyError, match="older copy stays in the ledger's write-ahead log"):
            ledger_erase(node, {"seq": revoked["seq"], "field": "detail.reason"}, events.append)
    finally:
        reader.rollback()
        reader.close()
    assert exit_codes.code_for(BusyError("x")) == exit_codes.BUSY == 11
    # It waited (said so once per try after the first), and kept what it did.
    assert events == [{"event": "waiting", "file": "ledger"}] * 2
    with pytest.raises(StorageError, match="holds no stored value"):
        node.audit.store.reveal(revoked["seq"], "detail.reason")
    # One record, committed with the deletion on the first try; the later tries
    # only empty the write-ahead log.
    [recorded] = _entries(node, "ledger.erased")
    assert recorded["detail"] == {
        "seq": revoked["seq"],
        "field": "detail.reason",
        "agreement_reason": "erased",
    }
    # Once the reader is gone, the same command removes the last copy.
    assert _erase(node, revoked["seq"])["already_erased"]
    assert "wal_pending" not in _entries(node, "ledger.erased")[-1]["detail"]
    assert NAME not in _file_bytes(node.audit.store.path)


@pytest.mark.usefixtures("quick_waits")
def test_a_ledger_reader_that_finishes_during_the_wait_is_no_error(node: Any) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    events: list[dict[str, Any]] = []
    reader = _reader_holding_a_snapshot(node.audit.store.path)

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        reader.rollback()  # the backup ends while the erasure waits

    try:
        result = ledger_erase(node, {"seq": revoked["seq"], "field": "detail.reason"}, on_event)
    finally:
        reader.close()
    assert events == [{"event": "waiting", "file": "ledger"}]
    assert not result["already_erased"]
    assert "wal_pending" not in _entries(node, "ledger.erased")[-1]["detail"]
    assert NAME not in _file_bytes(node.audit.store.path)


def test_an_agreement_store_reader_makes_the_erasure_busy_before_the_ledger_changes(
    node: Any,
) -> None:
    [revoked] = _entries(node, "agreement.revoked")
    store = agreements_of(node)
    store._db.execute("PRAGMA busy_timeout=50")  # the default waits 5 s
    path = node.config.data_dir / "agreements.db"
    reader = _reader_holding_a_snapshot(path)
    try:
        with pytest.raises(BusyError, match="holds the agreement store open") as busy:
            _erase(node, revoked["seq"])
    finally:
        reader.rollback()
        reader.close()
    assert busy.value.hint is not None and "run the erasure again" in busy.value.hint
    # The ledger's value waits for the run that finishes the store.
    assert node.audit.store.reveal(revoked["seq"], "detail.reason") == REASON
    assert _erase(node, revoked["seq"])["agreement_reason_erased"]
    assert NAME not in _file_bytes(path)
