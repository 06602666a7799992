"""Auditor bundles: export, offline verification, and tampering caught with the right message."""

from __future__ import annotations

import base64
import hashlib
import itertools
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.bundle import export_bundle
from ledger.canonical import dumps, loads
from ledger.checkpoint import parse_note
from ledger.errors import StorageError, VerificationError
from ledger.store import StoredCheckpoint
from ledger.verify import verify_bundle
from tests.unit.ledger.helpers import Federation, fill


def _export(fed: Federation, dept: str, out: Path) -> Path:
    export_bundle(
        fed.store(dept), fed.directory_json, out, origin=fed.origin(dept), ca_pem=fed.ca_pem
    )
    return out


def _alpha_and_beta(federation: Federation, tmp_path: Path) -> tuple[Path, Path]:
    """alpha's and beta's bundles, exported side by side as an auditor collects them."""
    return _export(federation, "alpha", tmp_path / "a"), _export(federation, "beta", tmp_path / "b")


def _published_alpha(federation: Federation, entries: int = 10) -> StoredCheckpoint:
    """alpha's log of ``entries`` entries with a published checkpoint over all of them."""
    fill(federation.store("alpha"), entries)
    return federation.publish("alpha")


@pytest.fixture
def two_bundles(federation: Federation, tmp_path: Path) -> tuple[Path, Path]:
    fill(federation.store("alpha"), 20)
    federation.publish("alpha")
    federation.share("alpha", "beta")
    fill(federation.store("alpha"), 5, 20)
    federation.share("alpha", "beta", rows=3)
    federation.share("beta", "alpha", rows=7)
    federation.publish("alpha")
    fill(federation.store("beta"), 4)
    federation.publish("beta")
    federation.publish("beta")
    return _alpha_and_beta(federation, tmp_path)


def test_export_and_verify_two_bundles(two_bundles: tuple[Path, Path]) -> None:
    report = verify_bundle(list(two_bundles))
    assert [b.node for b in report.bundles] == ["alpha", "beta"]
    assert report.shares_checked == 3
    alpha = report.bundles[0]
    assert alpha.entries == 28
    assert alpha.checkpoints == [20, 28]
    assert alpha.tail == 0
    assert alpha.directory_signature_checked


def test_zip_bundle_verifies(federation: Federation, tmp_path: Path) -> None:
    _published_alpha(federation)
    out = _export(federation, "alpha", tmp_path / "alpha.zip")
    assert zipfile.is_zipfile(out)
    report = verify_bundle([out])
    assert report.bundles[0].published_size == 10


def test_export_refuses_existing_path(federation: Federation, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(StorageError, match="already exists"):
        _export(federation, "alpha", tmp_path / "x")


def test_unpublished_checkpoint_is_left_out(federation: Federation, tmp_path: Path) -> None:
    store = federation.store("alpha")
    fill(store, 3)
    federation.publish("alpha")
    fill(store, 3, 3)
    store.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    report = verify_bundle([_export(federation, "alpha", tmp_path / "a")])
    assert report.bundles[0].checkpoints == [3]
    assert report.bundles[0].tail == 3


def _lines(bundle: Path) -> list[bytes]:
    return (bundle / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def _write_lines(bundle: Path, lines: list[bytes]) -> None:
    (bundle / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _set_manifest(bundle: Path, **changes: object) -> None:
    manifest = loads((bundle / "manifest.json").read_bytes().rstrip(b"\n"))
    manifest.update(changes)
    (bundle / "manifest.json").write_bytes(dumps(manifest) + b"\n")


def _edit_entry(bundle: Path, seq: int, **changes: object) -> None:
    lines = _lines(bundle)
    fields = loads(lines[seq])
    fields.update(changes)
    lines[seq] = dumps(fields)
    _write_lines(bundle, lines)


def test_edited_value_breaks_the_chain(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    _edit_entry(a, 4, outcome="ok", actor="someone-else")
    with pytest.raises(
        VerificationError, match=r"entry seq 5: prev .* is not the leaf hash of entry seq 4"
    ):
        verify_bundle([a])


def test_edited_last_entry_breaks_the_root(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    _edit_entry(a, 27, actor="someone-else")
    with pytest.raises(VerificationError, match=r"checkpoint size 28: root .* does not match"):
        verify_bundle([a])


def test_rechained_rewrite_is_caught_by_the_checkpoint(two_bundles: tuple[Path, Path]) -> None:
    # An attacker who rewrites an entry and recomputes every later prev keeps
    # the chain intact; the signed Merkle root still catches it.
    a, _ = two_bundles
    lines = _lines(a)
    import hashlib

    fields = loads(lines[10])
    fields["outcome"] = "ok" if fields["outcome"] != "ok" else "error"
    lines[10] = dumps(fields)
    for seq in range(11, len(lines)):
        fields = loads(lines[seq])
        fields["prev"] = hashlib.sha256(b"\0" + lines[seq - 1]).hexdigest()
        lines[seq] = dumps(fields)
    _write_lines(a, lines)
    with pytest.raises(VerificationError, match=r"checkpoint size 20: root"):
        verify_bundle([a])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ls: ls.pop(3), r"entry seq 3: seq is 4, expected 3"),
        (lambda ls: ls.insert(3, ls[3]), r"entry seq 4: seq is 3, expected 4"),
        (lambda ls: ls.__setitem__(slice(2, 4), [ls[3], ls[2]]), r"entry seq 2: seq is 3"),
        (lambda ls: ls.__setitem__(5, ls[5][:-2]), r"entry seq 5: .*(canonical|JSON)"),
        (
            lambda ls: ls.__setitem__(5, ls[5].replace(b'"v":1', b'"v":2')),
            r"entry seq 5: unknown entry version 2",
        ),
        (
            lambda ls: ls.__setitem__(5, ls[5].replace(b'"v":1}', b'"v":1,"x":1}')),
            r"entry seq 5: .*unknown fields \['x'\]",
        ),
        (
            lambda ls: ls.__setitem__(5, ls[5].replace(b'"node":"alpha"', b'"node":"beta"')),
            r"entry seq 5: recorded by 'beta'",
        ),
        (
            lambda ls: ls.__setitem__(5, ls[5].replace(b',"seq":5', b',"seq":5.0')),
            r"entry seq 5: .*float",
        ),
        (lambda ls: ls.__setitem__(5, b" " + ls[5]), r"entry seq 5: .*canonical"),
        (lambda ls: ls.__delitem__(slice(25, None)), r"holds 25 entries, the manifest says 28"),
        (
            lambda ls: ls.__setitem__(
                5, ls[5].replace(b'"reason":"test"}', b'"reason":"test","z":123456789012345678901}')
            ),
            r"entry seq 5: .*integer 123456789012345678901 is outside",
        ),
    ],
    ids=[
        "delete",
        "insert",
        "reorder",
        "truncate",
        "version",
        "extra-field",
        "node",
        "float",
        "whitespace",
        "tail-cut",
        "big-int",
    ],
)
def test_entry_tampering(two_bundles: tuple[Path, Path], mutate: object, message: str) -> None:
    a, _ = two_bundles
    lines = _lines(a)
    mutate(lines)  # type: ignore[operator]
    _write_lines(a, lines)
    with pytest.raises(VerificationError, match=message):
        verify_bundle([a])


def test_truncated_file_without_newline(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    data = (a / "entries.jsonl").read_bytes()
    (a / "entries.jsonl").write_bytes(data[:-10])
    with pytest.raises(VerificationError, match="does not end with a newline"):
        verify_bundle([a])


def _note(bundle: Path, size: int) -> Path:
    return bundle / "checkpoints" / f"{size:012d}.note"


def test_checkpoint_tampering(two_bundles: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_bundles
    cases: dict[str, tuple[Callable[[bytes], bytes], str]] = {
        "size": (
            lambda t: t.replace(b"\n20\n", b"\n19\n"),
            r"checkpoint size 20: .*signature .* does not verify",
        ),
        "cosig-dropped": (
            lambda t: b"\n".join(t.split(b"\n")[:-2]) + b"\n",
            r"checkpoint size 20: has 1 valid witness cosignature\(s\), the federation requires 2",
        ),
        "no-sig-block": (
            lambda t: t.split(b"\n\n")[0] + b"\n",
            r"checkpoint size 20: note has no signature block",
        ),
    }
    for name, (mutate, message) in cases.items():
        work = tmp_path / name
        shutil.copytree(a, work)
        note = _note(work, 20)
        note.write_bytes(mutate(note.read_bytes()))
        with pytest.raises(VerificationError, match=message):
            verify_bundle([work])


def test_checkpoint_deleted_or_reordered(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    _note(a, 28).unlink()
    with pytest.raises(
        VerificationError, match="checkpoint size 28: is listed in the manifest but missing"
    ):
        verify_bundle([a])
    shutil.copy(_note(a, 20), _note(a, 10))
    _set_manifest(a, checkpoints=[10, 20])
    with pytest.raises(VerificationError, match="checkpoint size 10: note is for size 20"):
        verify_bundle([a])
    _set_manifest(a, checkpoints=[28, 20])
    with pytest.raises(
        VerificationError, match=r"checkpoint sizes are not increasing \(28 then 20\)"
    ):
        verify_bundle([a])


def test_bad_consistency_proof(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    doc = loads((a / "proofs.json").read_bytes().rstrip(b"\n"))
    proof = doc["consistency"][0]["proof"]
    proof[0] = base64.b64encode(b"\x01" * 32).decode()
    (a / "proofs.json").write_bytes(dumps(doc) + b"\n")
    with pytest.raises(VerificationError, match="checkpoint size 28: consistency with size 20"):
        verify_bundle([a])


def test_foreign_directory_is_refused(two_bundles: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.unit.ledger.helpers import make_ca

    a, _ = two_bundles
    _, other_ca = make_ca()
    with pytest.raises(VerificationError, match="directory signature does not verify"):
        verify_bundle([a], ca_pem=other_ca)


def test_unknown_bundle_version(two_bundles: tuple[Path, Path]) -> None:
    a, _ = two_bundles
    _set_manifest(a, v=2)
    with pytest.raises(VerificationError, match="unknown bundle format"):
        verify_bundle([a])


def test_share_missing_on_the_receiver(federation: Federation, tmp_path: Path) -> None:
    federation.share("alpha", "beta")
    share_id = federation.share("alpha", "beta", receiver_records=False)
    federation.skew_ms = 2_000  # beta's ledger goes on after the share, without its entry
    fill(federation.store("beta"), 1)
    federation.publish("alpha")
    federation.publish("beta")
    a = _export(federation, "alpha", tmp_path / "a")
    b = _export(federation, "beta", tmp_path / "b")
    verify_bundle([a])
    with pytest.raises(
        VerificationError, match=f"entry seq 1: share {share_id} sent to beta has no share.received"
    ):
        verify_bundle([a, b])


def test_a_share_newer_than_the_other_bundle_is_reported_not_failed(
    federation: Federation, tmp_path: Path
) -> None:
    # beta's bundle was exported before it recorded the share alpha then sent it.
    share_id = federation.share("alpha", "beta", receiver_records=False)
    federation.publish("alpha")
    federation.publish("beta")
    a = _export(federation, "alpha", tmp_path / "a")
    b = _export(federation, "beta", tmp_path / "b")
    report = verify_bundle([a, b])
    assert report.shares_checked == 0
    assert [n for n in report.notes if share_id in n and "not yet covered" in n]


def test_a_receipt_the_provider_never_acknowledged_is_reported_not_failed(
    federation: Federation, tmp_path: Path
) -> None:
    share_id = federation.share("alpha", "beta", sender_records=False)
    federation.store("beta").append(
        {"event": "share.receipt_failed", "peer": "alpha", "outcome": "error",
         "detail": {"share_id": share_id, "reason": "alpha did not answer"}}
    )  # fmt: skip
    federation.skew_ms = 120_000  # alpha goes on long after: the share.sent is not just late
    fill(federation.store("alpha"), 1)
    for dept in ("alpha", "beta"):
        federation.publish(dept)
    report = verify_bundle(
        [_export(federation, d, tmp_path / f"{d}.zip") for d in ("alpha", "beta")]
    )
    assert [n for n in report.notes if share_id in n and "never acknowledged" in n]


def test_both_sides_must_agree_on_columns_and_purpose(
    federation: Federation, tmp_path: Path
) -> None:
    federation.share("alpha", "beta")
    federation.publish("alpha")
    federation.publish("beta")
    a = _export(federation, "alpha", tmp_path / "a")
    b = _export(federation, "beta", tmp_path / "b")
    for name, value in (("columns", ["age", "income"]), ("purpose", "marketing")):
        work = tmp_path / f"b-{name}"
        shutil.copytree(b, work)
        lines = (work / "entries.jsonl").read_bytes().splitlines()
        entry = loads(lines[0])
        entry[name] = value
        lines[0] = dumps(entry)
        (work / "entries.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        # The entry no longer matches beta's checkpoint, so check the cross-check
        # itself on a bundle whose checkpoints are left out.
        manifest = loads((work / "manifest.json").read_bytes().rstrip(b"\n"))
        manifest["checkpoints"] = []
        (work / "manifest.json").write_bytes(dumps(manifest) + b"\n")
        with pytest.raises(VerificationError, match=f"{name} .* differs from beta's entry seq 0"):
            verify_bundle([a, work])


@pytest.mark.parametrize(
    ("options", "bundle", "message"),
    [
        (
            {"receipt_signer": "gamma"},
            "a",
            r"entry seq 1: receipt for share \w+ is not signed by beta",
        ),
        (
            {"receiver_digest": "sha256:" + "e" * 64},
            "a",
            r"entry seq 1: share \w+: digest .* differs from beta's entry seq 0",
        ),
        (
            {"sender_records": False},
            "b",
            r"entry seq 0: share \w+ received from alpha has no share.sent",
        ),
    ],
    ids=["receipt-signer", "digest", "sent-missing"],
)
def test_share_cross_check(
    federation: Federation, tmp_path: Path, options: dict[str, object], bundle: str, message: str
) -> None:
    fill(federation.store("alpha"), 1)
    federation.share("alpha", "beta", **options)  # type: ignore[arg-type]
    federation.skew_ms = 120_000  # alpha's bundle goes on well after the share
    fill(federation.store("alpha"), 1)
    federation.publish("alpha")
    federation.publish("beta")
    a = _export(federation, "alpha", tmp_path / "a")
    b = _export(federation, "beta", tmp_path / "b")
    verify_bundle([b])
    with pytest.raises(VerificationError, match=message) as caught:
        verify_bundle([a, b])
    assert f"/{bundle}:" in str(caught.value)


def test_receipt_checked_both_orders(federation: Federation, tmp_path: Path) -> None:
    federation.share("alpha", "beta")
    federation.publish("alpha")
    federation.publish("beta")
    a = _export(federation, "alpha", tmp_path / "a")
    b = _export(federation, "beta", tmp_path / "b")
    assert verify_bundle([a, b]).shares_checked == 1
    assert verify_bundle([b, a]).shares_checked == 1


BUNDLE_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@BUNDLE_SETTINGS
@given(data=st.data())
def test_any_bit_flip_in_entries_is_caught(
    two_bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    a, _ = two_bundles
    work = tmp_path_factory.mktemp("flip") / "a"
    shutil.copytree(a, work)
    raw = bytearray((work / "entries.jsonl").read_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[position] ^= 1 << bit
    (work / "entries.jsonl").write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match=r"entry seq \d+|checkpoint size \d+|entries.jsonl"):
        verify_bundle([work])


@BUNDLE_SETTINGS
@given(data=st.data())
def test_any_bit_flip_in_a_checkpoint_is_caught(
    two_bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    a, _ = two_bundles
    work = tmp_path_factory.mktemp("flip") / "a"
    shutil.copytree(a, work)
    size = data.draw(st.sampled_from([20, 28]))
    note = _note(work, size)
    raw = bytearray(note.read_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= 1 << data.draw(st.integers(0, 7))
    note.write_bytes(bytes(raw))
    try:
        verify_bundle([work])
    except VerificationError as e:
        assert f"checkpoint size {size}" in str(e)
    else:
        # A flip inside a cosignature of the third witness can leave two valid
        # cosignatures, which still meets the 2-of-2 policy for this log: the
        # flipped line is then no longer a valid cosignature of a known key.
        text = bytes(raw).decode("utf-8", "replace")
        assert text.count("\u2014") >= 3


@BUNDLE_SETTINGS
@given(data=st.data())
def test_deleting_inserting_reordering_entries_is_caught(
    two_bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    a, _ = two_bundles
    work = tmp_path_factory.mktemp("edit") / "a"
    shutil.copytree(a, work)
    lines = _lines(work)
    op = data.draw(st.sampled_from(["delete", "insert", "swap"]))
    i = data.draw(st.integers(0, len(lines) - 2))
    if op == "delete":
        del lines[i]
    elif op == "insert":
        lines.insert(i, lines[data.draw(st.integers(0, len(lines) - 1))])
    else:
        j = data.draw(st.integers(i + 1, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    _write_lines(work, lines)
    with pytest.raises(VerificationError, match=r"entry seq \d+|entries.jsonl"):
        verify_bundle([work])


@pytest.mark.parametrize("parallel", [False, True])
def test_chunked_verification_finds_the_first_violation(
    two_bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    import ledger.verify as verify_module

    # Small chunks, and worker processes when asked, so chunk boundaries are exercised.
    monkeypatch.setattr(verify_module, "_CHUNK", 8)
    monkeypatch.setattr(verify_module, "_PARALLEL_MIN", 10 if parallel else 10**9)
    a, _ = two_bundles
    assert verify_bundle([a]).bundles[0].entries == 28
    _edit_entry(a, 7, actor="someone-else")
    _edit_entry(a, 20, actor="someone-else")
    with pytest.raises(
        VerificationError, match=r"entry seq 8: prev .* is not the leaf hash of entry seq 7"
    ):
        verify_bundle([a])


def test_erasure_keeps_the_bundle_verifiable(federation: Federation, tmp_path: Path) -> None:
    store = federation.store("alpha")
    seq, _ = store.append(
        {"event": "access.read", "actor": "Jane Citizen", "detail": {"subject": "ID-123"}},
        sensitive={"actor", "detail.subject"},
    )
    fill(store, 3)
    federation.publish("alpha")
    before = _export(federation, "alpha", tmp_path / "before")
    store.erase(seq, "actor")
    store.erase(seq, "detail.subject")
    after = _export(federation, "alpha", tmp_path / "after")
    assert (before / "entries.jsonl").read_bytes() == (after / "entries.jsonl").read_bytes()
    assert b"Jane" not in (after / "entries.jsonl").read_bytes()
    assert verify_bundle([after]).bundles[0].published_size == 4


@pytest.mark.parametrize("kind", ["directory", "zip"])
def test_worker_processes_verify_and_catch_what_the_serial_path_catches(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import ledger.verify as verify_module

    # Many small runs and ranges: workers read their own ranges of a directory
    # bundle's file, or of the bytes read from a zip.
    monkeypatch.setattr(verify_module, "_CHUNK", 4)
    monkeypatch.setattr(verify_module, "_PARALLEL_MIN", 1)
    fill(federation.store("alpha"), 37)
    federation.publish("alpha")
    good = _export(federation, "alpha", tmp_path / "good")
    report = verify_bundle([good])
    assert report.bundles[0].entries == 37
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    _edit_entry(bad, 21, actor="someone-else")
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    (truncated / "entries.jsonl").write_bytes((good / "entries.jsonl").read_bytes()[:-5])
    if kind == "zip":
        bad, truncated = _zipped(bad), _zipped(truncated)
        assert verify_bundle([_zipped(good)]).bundles[0].root == report.bundles[0].root
    with pytest.raises(VerificationError, match=r"entry seq 22: prev .* entry seq 21"):
        verify_bundle([bad])
    with pytest.raises(VerificationError, match="does not end with a newline"):
        verify_bundle([truncated])


def _zipped(bundle: Path) -> Path:
    out = bundle.with_suffix(".zip")
    with zipfile.ZipFile(out, "w") as z:
        for file in sorted(bundle.rglob("*")):
            if file.is_file():
                z.write(file, file.relative_to(bundle).as_posix())
    return out


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=40), max_size=300),
    pieces=st.integers(min_value=1, max_value=20),
    chunk=st.sampled_from([1, 2, 4, 8]),
    block=st.integers(min_value=1, max_value=200),
)
def test_file_ranges_tile_the_file_at_run_starts(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    pieces: int,
    chunk: int,
    block: int,
) -> None:
    import ledger.verify as verify_module

    data = b"".join(b"x" * (n - 1) + b"\n" for n in lengths)
    path = tmp_path_factory.mktemp("ranges") / "entries.jsonl"
    path.write_bytes(data)
    line_starts = [0, *itertools.accumulate(lengths)]
    old = verify_module._CHUNK, verify_module._CUT_BLOCK
    verify_module._CHUNK, verify_module._CUT_BLOCK = chunk, block
    try:
        ranges = list(verify_module._file_ranges(path, pieces, "test"))
    finally:
        verify_module._CHUNK, verify_module._CUT_BLOCK = old
    # Contiguous, covering every byte once, each starting at a line whose index is
    # a multiple of the run length and naming that index as its first seq.
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, end, _), (start, _, _) in itertools.pairwise(ranges):
        assert end == start
    for start, end, first_seq in ranges:
        assert start < end or len(ranges) == 1
        assert first_seq % chunk == 0 and line_starts[first_seq] == start
    assert len(ranges) <= pieces


def _witness_records(
    federation: Federation, witness: str, log: str, cp: StoredCheckpoint, *, root: bytes = b""
) -> None:
    """What a witness node's Ledger service records when it cosigns ``log``'s checkpoint:
    the log's signed note and the witness's own cosignature line with it."""
    note = parse_note(cp.note)
    line = next(s for s in note.signatures if s.name == federation.origin(witness))
    federation.store(witness).append(
        {
            "event": "witness.cosigned",
            "peer": log,
            "detail": {
                "origin": federation.origin(log),
                "size": cp.size,
                "root": base64.b64encode(root or cp.root).decode(),
                "note": cp.note.decode(),
                "cosignature": line.encode(),
            },
        }
    )


def _strip_checkpoints(bundle: Path) -> None:
    manifest = loads((bundle / "manifest.json").read_bytes().rstrip(b"\n"))
    manifest["checkpoints"] = []
    (bundle / "manifest.json").write_bytes(dumps(manifest) + b"\n")


def _rechain(bundle: Path, lines: list[bytes]) -> None:
    """Rewrite ``entries.jsonl`` as a log would to hide an edit: seq and prev made whole again."""
    out, prev = [], None
    for seq, raw in enumerate(lines):
        entry = loads(raw)
        entry["seq"] = seq
        if prev is not None:
            entry["prev"] = prev
        line = dumps(entry)
        prev = hashlib.sha256(b"\x00" + line).hexdigest()
        out.append(line)
    (bundle / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in out))
    manifest = loads((bundle / "manifest.json").read_bytes().rstrip(b"\n"))
    manifest["size"] = len(out)
    (bundle / "manifest.json").write_bytes(dumps(manifest) + b"\n")


@pytest.fixture
def witnessed(federation: Federation, tmp_path: Path) -> tuple[Path, Path, Path]:
    """alpha's log of 12 entries with a checkpoint at 10 that beta and gamma cosigned and
    recorded (the federation's threshold is 2)."""
    cp = _published_alpha(federation)
    for witness in ("beta", "gamma"):
        _witness_records(federation, witness, "alpha", cp)
    fill(federation.store("alpha"), 2, 10)
    federation.publish("beta")
    federation.publish("gamma")
    return (
        _export(federation, "alpha", tmp_path / "a"),
        _export(federation, "beta", tmp_path / "b"),
        _export(federation, "gamma", tmp_path / "g"),
    )


def test_a_witnessed_checkpoint_binds_the_log(witnessed: tuple[Path, Path, Path]) -> None:
    report = verify_bundle(list(witnessed))
    assert report.witnessed_checked == 2
    assert report.bundles[0].witnessed_size == 10
    a, b, _ = witnessed
    alone = verify_bundle([a, b])  # one witness's word is below the threshold of two
    assert alone.witnessed_checked == 1 and alone.bundles[0].witnessed_size == 0


def test_a_log_rewritten_under_a_stripped_manifest_fails_against_its_witness(
    witnessed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    a, b, _ = witnessed
    work = tmp_path / "rewritten"
    shutil.copytree(a, work)
    lines = (work / "entries.jsonl").read_bytes().splitlines()
    del lines[3]  # an entry removed, the chain rebuilt, the checkpoints left out
    _rechain(work, lines)
    _strip_checkpoints(work)
    verify_bundle([work])  # alone, it is a well-formed, unpublished log
    with pytest.raises(VerificationError, match="the log was rewritten after it was witnessed"):
        verify_bundle([work, b])
    with pytest.raises(VerificationError, match="covered by no published checkpoint"):
        verify_bundle([work], require_published=True)


def test_a_log_cut_back_and_going_on_fails(
    witnessed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    a, b, _ = witnessed
    work = tmp_path / "cut"
    shutil.copytree(a, work)
    lines = (work / "entries.jsonl").read_bytes().splitlines()[:8]
    later = loads(lines[-1])
    later["time"] += 600_000  # the log went on recording after the witness cosigned
    _rechain(work, [*lines, dumps(later)])
    _strip_checkpoints(work)
    with pytest.raises(VerificationError, match="holds 9 entries, but beta cosigned alpha's"):
        verify_bundle([work, b])


def test_an_older_export_of_the_log_is_a_note_unless_strict(
    federation: Federation, tmp_path: Path
) -> None:
    _published_alpha(federation)
    old = _export(federation, "alpha", tmp_path / "a-old")
    fill(federation.store("alpha"), 5, 10)
    _witness_records(federation, "beta", "alpha", federation.publish("alpha"))
    federation.publish("beta")
    b = _export(federation, "beta", tmp_path / "b")
    report = verify_bundle([old, b])
    assert [n for n in report.notes if "export alpha again" in n]
    with pytest.raises(VerificationError, match="the log was cut back"):
        verify_bundle([old, b], require_published=True)


def test_a_witness_claim_that_does_not_verify_fails_the_witness(
    federation: Federation, tmp_path: Path
) -> None:
    cp = _published_alpha(federation)
    _witness_records(federation, "beta", "alpha", cp, root=b"\x07" * 32)  # not what alpha signed
    federation.publish("beta")
    a, b = _alpha_and_beta(federation, tmp_path)
    verify_bundle([a])
    with pytest.raises(VerificationError, match=r"/b: entry seq \d+: witness.cosigned entry does"):
        verify_bundle([a, b])


def test_a_witness_record_without_the_signed_note_is_not_used(
    federation: Federation, tmp_path: Path
) -> None:
    _published_alpha(federation)
    federation.store("beta").append(
        {"event": "witness.cosigned", "peer": "alpha",
         "detail": {"origin": federation.origin("alpha"), "size": 5,
                    "root": base64.b64encode(b"\x07" * 32).decode()}}
    )  # fmt: skip
    federation.publish("beta")
    a, b = _alpha_and_beta(federation, tmp_path)
    report = verify_bundle([a, b])  # an unsigned claim can frame nobody
    assert report.witnessed_checked == 0
    assert [n for n in report.notes if "without the log's signed note" in n]


def test_require_published_accepts_entries_a_witness_covers(
    witnessed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    a, b, g = witnessed
    with pytest.raises(VerificationError, match=r"entries 10\.\.11 are covered by no published"):
        verify_bundle([a, b, g], require_published=True)


def test_a_receipt_dated_ahead_cannot_hide_a_missing_share_received(
    federation: Federation, tmp_path: Path
) -> None:
    # beta signs a receipt dated far ahead and never records the share.
    federation.share("alpha", "beta", receiver_records=False, receipt_time=4_000_000_000)
    federation.skew_ms = 3_600_000  # beta's ledger goes on for an hour
    fill(federation.store("beta"), 1)
    for dept in ("alpha", "beta"):
        federation.publish(dept)
    a, b = _alpha_and_beta(federation, tmp_path)
    with pytest.raises(VerificationError, match=r"has no share\.received"):
        verify_bundle([a, b])


def test_without_a_ca_the_bundles_must_share_one(federation: Federation, tmp_path: Path) -> None:
    fill(federation.store("alpha"), 3)
    federation.publish("alpha")
    a = _export(federation, "alpha", tmp_path / "a")
    impostor = Federation(tmp_path / "impostor")  # its own CA, same federation name
    try:
        fill(impostor.store("beta"), 3)
        impostor.publish("beta")
        b = _export(impostor, "beta", tmp_path / "b")
        report = verify_bundle([b])
        assert report.ca_from_bundle  # verified only against the CA the bundle carries
        with pytest.raises(VerificationError, match="signed under different CAs"):
            verify_bundle([a, b])
        with pytest.raises(VerificationError, match="directory"):
            verify_bundle([b], ca_pem=federation.ca_pem)
    finally:
        impostor.close()


def test_a_damaged_deflate_stream_is_a_verification_error(
    federation: Federation, tmp_path: Path
) -> None:
    fill(federation.store("alpha"), 200)
    federation.publish("alpha")
    out = _export(federation, "alpha", tmp_path / "alpha.zip")
    with zipfile.ZipFile(out) as z:
        info = z.getinfo("entries.jsonl")
    data = bytearray(out.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"alpha\.zip"):
        verify_bundle([out])
