"""An object key holding an escaped lone surrogate (``"\\ud800"``) is refused, never a crash.

Canonical JSON orders keys by UTF-16 code units, and a lone surrogate has none
in strict UTF-16: such a key is not canonical JSON, and must come out as the
ledger's own error, naming the entry, from the parser and the verifier alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.canonical import dumps, loads
from ledger.entry import GENESIS_PREV
from ledger.errors import CanonicalJSONError, VerificationError
from ledger.verify import verify_bundle
from tests.unit.ledger.helpers import Federation, chain, entry_fields


@pytest.mark.parametrize("key", [b"\\ud800", b"\\udfff", b"a\\udc80"])
def test_a_bundle_entry_with_a_lone_surrogate_key_fails_verification(
    federation: Federation, tmp_path: Path, key: bytes
) -> None:
    lines = chain([entry_fields(0, GENESIS_PREV), entry_fields(1, GENESIS_PREV)])
    lines[1] = lines[1].replace(b'"detail":{}', b'"detail":{"' + key + b'":1}')
    out = federation.bundle_of_lines("alpha", lines, tmp_path / "bundle")
    with pytest.raises(VerificationError, match="entry seq 1: entry is not canonical JSON"):
        verify_bundle([out], ca_pem=federation.ca_pem)


@pytest.mark.parametrize(
    "value",
    [{"\ud800": 1}, {"a": 1, "\udc80": 2}, [{"x": {"\udfff": None}}]],
    ids=["alone", "beside-another", "nested"],
)
def test_canonical_json_refuses_a_lone_surrogate_key_by_its_path(value: object) -> None:
    with pytest.raises(CanonicalJSONError, match="string holds a lone surrogate"):
        dumps(value)


def test_canonical_json_refuses_an_escaped_lone_surrogate_key_when_loading() -> None:
    with pytest.raises(CanonicalJSONError):
        loads(b'{"\\ud800":1,"a":2}')
