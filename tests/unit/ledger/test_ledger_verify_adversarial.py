"""Bundles built by a dishonest log or witness: each must fail verification.

Each test builds the smallest bundle that shows one property, signed and
cosigned with the federation's real keys, so only the property under test
is wrong.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.bundle import export_bundle
from ledger.canonical import dumps
from ledger.checkpoint import cosign, parse_note, sign_checkpoint
from ledger.entry import GENESIS_PREV
from ledger.errors import VerificationError
from ledger.merkle import hash_leaf
from ledger.shapes import ShapeCache, parse_canonical_lines
from ledger.verify import verify_bundle
from tests.unit.ledger.helpers import Federation, chain, entry_fields, fill, make_directory


def _split_lines() -> list[bytes]:
    """Entry 0 and the first half of entry 1 on line 0, the rest of entry 1 on line 1:
    joined with a comma, the two lines read as the two entries."""
    first = dumps(entry_fields(0, GENESIS_PREV, event="share.sent"))
    template = dumps(entry_fields(1, "f" * 64, columns=["a", "b"]))
    cut = template.index(b'["a",') + 4
    line0 = first + b"," + template[:cut]
    second = dumps(entry_fields(1, hash_leaf(line0).hex(), columns=["a", "b"]))
    line1 = second[cut + 1 :]
    assert line0 + b"," + line1 == first + b"," + second
    return [line0, line1]


def test_an_entry_split_across_two_lines_is_refused(federation: Federation, tmp_path: Path) -> None:
    bundle = federation.bundle_of_lines("alpha", _split_lines(), tmp_path / "split")
    with pytest.raises(VerificationError, match="entry seq 0: entry is not canonical JSON"):
        verify_bundle([bundle], ca_pem=federation.ca_pem, require_published=True)


def test_the_batch_parser_refuses_lines_that_are_not_one_value_each() -> None:
    assert parse_canonical_lines(_split_lines()) is None
    assert parse_canonical_lines([b'{"a":1', b'"b":2}']) is None
    assert parse_canonical_lines([b"[1", b"2]"]) is None


JSON_ITEMS = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text('ab,[]{}":', max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab", max_size=2), inner),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(JSON_ITEMS, min_size=1, max_size=5), st.data())
def test_lines_spliced_at_any_comma_parse_only_when_each_line_is_its_own_value(
    values: list[Any], data: st.DataObject
) -> None:
    # The values are joined with commas and cut again at commas of the joined bytes,
    # wherever they are: inside a value, or between two.
    joined = b",".join(dumps(v) for v in values)
    commas = [i for i, byte in enumerate(joined) if byte == ord(",")]
    cuts = sorted(data.draw(st.sets(st.sampled_from(commas), max_size=4)) if commas else [])
    lines = [
        joined[a + 1 if a >= 0 else 0 : b]
        for a, b in zip([-1, *cuts], [*cuts, len(joined)], strict=True)
    ]
    assert b",".join(lines) == joined
    parsed = parse_canonical_lines(lines)
    if parsed is not None:
        assert [dumps(v) for v in parsed] == lines
        assert len(parsed) == len(lines)
    each_is_a_value = True
    for line in lines:
        try:
            if dumps(json.loads(line)) != line:
                each_is_a_value = False
        except ValueError:
            each_is_a_value = False
    assert (parsed is not None) == each_is_a_value


# Entry times never decrease (FORMAT.md §2). The share and cut-back checks read
# a bundle's last time; a back-dated last entry would turn a failure into a note.

#: Entries of several shapes, so every check of the verifier's ladder sees them:
#: learned shapes, the grammar scan, the batch parser, and the entry-by-entry walk.
_SHAPES: list[dict[str, Any]] = [
    {"event": "rpc.call", "detail": {"i": 1}},
    {"event": "access.read", "columns": ["a"], "detail": {"k": {"nested": True}}},
    {"event": "rpc.call", "actor": "é\\n", "detail": {}},
]


def _timed_lines(times: list[int]) -> list[bytes]:
    return chain(
        [
            entry_fields(i, "", time=t, **_SHAPES[(i // 3) % len(_SHAPES)])
            for i, t in enumerate(times)
        ]
    )


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("back_dated", [1, 5, 8, 16, 31, 37, 39])
def test_a_back_dated_entry_is_refused_wherever_it_is(
    federation: Federation,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parallel: bool,
    back_dated: int,
) -> None:
    import ledger.verify as verify_module

    # Batches of 4 in runs of 8: the back-dated entry falls inside a batch, at a
    # batch start, at a run start, at the start of a worker's range, or last.
    monkeypatch.setattr(verify_module, "_BATCH", 4)
    monkeypatch.setattr(verify_module, "_CHUNK", 8)
    monkeypatch.setattr(verify_module, "_PARALLEL_MIN", 1 if parallel else 10**9)
    times = [TIME0 + 1000 * i for i in range(40)]
    equal = federation.bundle_of_lines("alpha", _timed_lines([TIME0] * 40), tmp_path / "eq")
    assert verify_bundle([equal]).bundles[0].entries == 40  # equal times are fine
    times[back_dated] = times[back_dated - 1] - 1
    # Another federation: this one's witnesses would refuse a second root for size 40.
    other = Federation(tmp_path / "other")
    bad = other.bundle_of_lines("alpha", _timed_lines(times), tmp_path / "bad")
    other.close()
    with pytest.raises(
        VerificationError,
        match=rf"entry seq {back_dated}: time \d+ is before the time of entry seq "
        rf"{back_dated - 1} \(\d+\): entry times never decrease",
    ):
        verify_bundle([bad])


TIME0 = 1_795_900_664_875


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=12), st.integers(0, 3))
def test_every_batch_check_refuses_decreasing_times(steps: list[int], before: int) -> None:
    import ledger.verify as verify_module
    from ledger.scan import node_token, scan_batch

    # Times from steps of -1..+2: any negative step is a decrease.
    times, t = [], TIME0
    for step in steps:
        t += step - 1
        times.append(t)
    min_time = TIME0 - 2 + before
    ok = times[0] >= min_time and sorted(times) == times
    lines = [
        dumps(entry_fields(i, "0" * 64, time=times[i], detail={"i": 1})) for i in range(len(times))
    ]
    lines = chain([json.loads(line) for line in lines])
    leaves = [hash_leaf(line) for line in lines]
    # Two caches: one learns the shape from equal times, one learns from this batch.
    cache = ShapeCache("alpha")
    warm = chain([entry_fields(i, "", time=TIME0, detail={"i": 1}) for i in range(2)])
    assert cache.check_batch(warm, 0, GENESIS_PREV.encode(), hash_leaf(warm[0])) is not None
    fresh = ShapeCache("alpha").check_batch(
        lines, 0, GENESIS_PREV.encode(), b"".join(leaves[:-1]), min_time
    )
    learned = cache.check_batch(lines, 0, GENESIS_PREV.encode(), b"".join(leaves[:-1]), min_time)
    token = node_token("alpha")
    assert token is not None
    scanned = scan_batch(lines, 0, token, leaves[:-1], None, min_time)
    blob = scan_batch(lines, 0, token, leaves[:-1], b"".join(x + b"\n" for x in lines), min_time)
    parsed = [json.loads(line) for line in lines]
    batch = verify_module._batch_ok(parsed, 0, "alpha", leaves, 0, min_time)
    assert (fresh is not None) == (learned is not None) == ok
    assert (scanned is not None) == (blob is not None) == batch == ok


# Witnesses' records: every claim is verified, and two roots for one size are a split view.


def _cosign_and_record(
    federation: Federation, witness: str, log: str, size: int, root: bytes
) -> None:
    """Have ``log`` sign (size, root), ``witness`` cosign it and record it as its node does."""
    origin = federation.origin(log)
    note = sign_checkpoint(origin, size, root, federation.keys[log])
    held = federation.witnesses[witness].state.get(origin)
    line = federation.witnesses[witness].add_checkpoint(held[0] if held else 0, [], note)
    federation.store(witness).append(
        {
            "event": "witness.cosigned",
            "peer": log,
            "detail": {
                "origin": origin,
                "size": size,
                "root": base64.b64encode(root).decode(),
                "note": note.decode(),
                "cosignature": line.encode(),
            },
        }
    )


def _exported(federation: Federation, dept: str, out: Path) -> Path:
    fill(federation.store(dept), 2)
    federation.publish(dept)
    store = federation.store(dept)
    origin = federation.origin(dept)
    return export_bundle(
        store, federation.directory_json, out, origin=origin, ca_pem=federation.ca_pem
    ).path


@pytest.mark.parametrize("split", [False, True])
def test_a_split_view_in_witnesses_bundles_fails_without_the_logs_bundle(
    federation: Federation, tmp_path: Path, split: bool
) -> None:
    _cosign_and_record(federation, "beta", "alpha", 3, b"\x11" * 32)
    _cosign_and_record(federation, "gamma", "alpha", 3, (b"\x22" if split else b"\x11") * 32)
    beta = _exported(federation, "beta", tmp_path / "b")
    gamma = _exported(federation, "gamma", tmp_path / "g")
    if not split:
        assert verify_bundle([beta, gamma], require_published=True).bundles[1].entries == 3
        return
    with pytest.raises(
        VerificationError,
        match=r"g: entry seq 0: alpha signed two roots for size 3: 1111.* cosigned by beta "
        r"\(.*b: entry seq 0\) and 2222.* cosigned by gamma",
    ):
        verify_bundle([beta, gamma])


def _flip_last_signature_bit(line: str) -> str:
    """Flip one bit of the signature in a signature line, keeping its name and key ID."""
    head, text = line.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(text))
    blob[-1] ^= 1
    return f"{head} {base64.b64encode(bytes(blob)).decode()}" + (
        "\n" if line.endswith("\n") else ""
    )


def _forge_note(detail: dict[str, Any]) -> None:
    body, signature = detail["note"].split("\n\n")
    detail["note"] = body + "\n\n" + _flip_last_signature_bit(signature)


def _forge_cosignature(detail: dict[str, Any]) -> None:
    detail["cosignature"] = _flip_last_signature_bit(detail["cosignature"])


def _other_root(detail: dict[str, Any]) -> None:
    detail["root"] = base64.b64encode(b"\x33" * 32).decode()


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (_forge_note, r"log signature of fednode/testfed/alpha does not verify"),
        (_forge_cosignature, r"cosignature by fednode/testfed/beta does not verify"),
        (_other_root, r"size or root differs from the signed note"),
    ],
    ids=["log-signature", "cosignature", "root"],
)
def test_a_forged_claim_fails_without_the_logs_bundle(
    federation: Federation, tmp_path: Path, forge: Any, message: str
) -> None:
    origin = federation.origin("alpha")
    note = sign_checkpoint(origin, 3, b"\x11" * 32, federation.keys["alpha"])
    line = federation.witnesses["beta"].add_checkpoint(0, [], note)
    detail = {
        "origin": origin,
        "size": 3,
        "root": base64.b64encode(b"\x11" * 32).decode(),
        "note": note.decode(),
        "cosignature": line.encode(),
    }
    forge(detail)
    federation.store("beta").append(
        {"event": "witness.cosigned", "peer": "alpha", "detail": detail}
    )
    beta = _exported(federation, "beta", tmp_path / "b")
    with pytest.raises(
        VerificationError,
        match=rf"entry seq 0: witness\.cosigned entry does not verify: .*{message}",
    ):
        verify_bundle([beta])


def test_a_claim_under_a_key_the_directory_no_longer_names_is_not_used(
    federation: Federation, tmp_path: Path
) -> None:
    # alpha enrolled again under a new key: what beta cosigned of its old log is
    # evidence neither for nor against the new one, and no split view with it.
    old_key = Ed25519PrivateKey.from_private_bytes(b"o" * 32)
    origin = federation.origin("alpha")
    for key, root in ((old_key, b"\x11"), (federation.keys["alpha"], b"\x22")):
        note = sign_checkpoint(origin, 3, root * 32, key)
        line = cosign(parse_note(note).text, federation.origin("beta"), federation.keys["beta"], 1)
        detail = {
            "origin": origin,
            "size": 3,
            "root": base64.b64encode(root * 32).decode(),
            "note": note.decode(),
            "cosignature": line.encode(),
        }
        federation.store("beta").append(
            {"event": "witness.cosigned", "peer": "alpha", "detail": detail}
        )
    beta = _exported(federation, "beta", tmp_path / "b")
    report = verify_bundle([beta])
    assert any("keys the directory no longer names" in note for note in report.notes)


@pytest.mark.parametrize("origin", [["fednode", "testfed", "beta"], 7, None, {"a": 1}])
def test_a_claim_naming_a_non_string_origin_is_a_verification_error(
    federation: Federation, tmp_path: Path, origin: Any
) -> None:
    federation.store("alpha").append(
        {"event": "witness.cosigned", "detail": {"origin": origin, "size": 1}}
    )
    bundle = _exported(federation, "alpha", tmp_path / "a")
    with pytest.raises(
        VerificationError, match=r"entry seq 0: witness.cosigned names origin .*not a string"
    ):
        verify_bundle([bundle])


# The witness policy comes from the newest directory among the bundles.


@pytest.fixture
def old_directory_bundles(federation: Federation, tmp_path: Path) -> tuple[Path, Path]:
    """beta published under directory serial 2 (threshold 2); alpha's checkpoint no witness
    cosigned, in a bundle carrying serial 1 (threshold 0), which the CA also signed."""
    keys = {d: k.public_key() for d, k in federation.keys.items()}
    current = make_directory(federation.ca_key, keys, set(federation.departments), 2, serial=2)
    old = make_directory(federation.ca_key, keys, set(federation.departments), 0, serial=1)
    fill(federation.store("beta"), 4)
    federation.publish("beta")
    beta = export_bundle(
        federation.store("beta"), current, tmp_path / "b", origin=federation.origin("beta")
    ).path
    alpha = federation.store("alpha")
    fill(alpha, 7)
    alpha.sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    old_alpha = export_bundle(alpha, old, tmp_path / "a", origin=federation.origin("alpha")).path
    return old_alpha, beta


def test_an_older_laxer_directory_does_not_publish_an_uncosigned_checkpoint(
    federation: Federation, old_directory_bundles: tuple[Path, Path]
) -> None:
    alpha, beta = old_directory_bundles
    ca = federation.ca_pem
    alone = verify_bundle([alpha], ca_pem=ca, require_published=True)  # serial 1 says so
    assert alone.bundles[0].published_size == 7
    assert (alone.bundles[0].directory_serial, alone.bundles[0].directory_threshold) == (1, 0)
    report = verify_bundle([alpha, beta], ca_pem=ca)
    assert (report.policy_serial, report.policy_threshold) == (2, 2)
    assert [b.published_size for b in report.bundles] == [0, 4]
    assert [b.directory_serial for b in report.bundles] == [1, 2]
    assert any("carries directory serial 1" in note for note in report.notes)
    with pytest.raises(VerificationError, match=r"a: entries 0\.\.6 are covered by no published"):
        verify_bundle([alpha, beta], ca_pem=ca, require_published=True)


@pytest.mark.parametrize(("minimum", "fails"), [(0, False), (1, False), (2, True)])
def test_a_minimum_directory_serial_refuses_an_older_directory(
    federation: Federation, old_directory_bundles: tuple[Path, Path], minimum: int, fails: bool
) -> None:
    alpha, _ = old_directory_bundles
    if fails:
        with pytest.raises(
            VerificationError, match=r"a: directory\.json: serial 1 is older than the oldest"
        ):
            verify_bundle([alpha], ca_pem=federation.ca_pem, min_directory_serial=minimum)
    else:
        verify_bundle([alpha], ca_pem=federation.ca_pem, min_directory_serial=minimum)


def test_two_different_directories_with_one_serial_are_refused(
    federation: Federation, tmp_path: Path
) -> None:
    keys = {d: k.public_key() for d, k in federation.keys.items()}
    lax = make_directory(federation.ca_key, keys, set(federation.departments), 0, serial=1)
    fill(federation.store("beta"), 2)
    federation.publish("beta")
    beta = export_bundle(
        federation.store("beta"),
        federation.directory_json,
        tmp_path / "b",
        origin=federation.origin("beta"),
    ).path
    fill(federation.store("alpha"), 2)
    federation.store("alpha").sign_checkpoint(federation.origin("alpha"), federation.keys["alpha"])
    alpha = export_bundle(
        federation.store("alpha"), lax, tmp_path / "a", origin=federation.origin("alpha")
    ).path
    with pytest.raises(
        VerificationError, match="differs from another bundle's directory with the same serial"
    ):
        verify_bundle([alpha, beta], ca_pem=federation.ca_pem)


def _patch_headers(data: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    at = out.find(signature)
    while at >= 0:
        out[at + offset : at + offset + len(value)] = value
        at = out.find(signature, at + 4)
    return bytes(out)


@pytest.mark.parametrize(
    ("local", "central", "message"),
    [
        ((6, b"\x01\x00"), (8, b"\x01\x00"), "is encrypted"),  # general-purpose flag bit 0
        ((8, b"\x63\x00"), (10, b"\x63\x00"), "compression method is not supported"),
    ],
    ids=["encrypted-flag", "unknown-compression"],
)
def test_a_zip_the_reader_cannot_open_is_a_verification_error_naming_the_file(
    federation: Federation,
    tmp_path: Path,
    local: tuple[int, bytes],
    central: tuple[int, bytes],
    message: str,
) -> None:
    fill(federation.store("alpha"), 3)
    federation.publish("alpha")
    good = export_bundle(
        federation.store("alpha"),
        federation.directory_json,
        tmp_path / "good.zip",
        origin=federation.origin("alpha"),
    ).path
    verify_bundle([good])
    data = _patch_headers(good.read_bytes(), b"PK\x03\x04", *local)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_patch_headers(data, b"PK\x01\x02", *central))
    with pytest.raises(
        VerificationError, match=rf"bad\.zip: cannot read manifest\.json: .*{message}"
    ):
        verify_bundle([bad])
