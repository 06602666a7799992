"""The public RFC 6962 / RFC 9162 proof vectors (see tests/vectors/rfc6962/README.md).

Every case with ``wantErr: false`` must verify and every case with
``wantErr: true`` must raise ProofError.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import ProofError
from ledger.merkle import verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc6962"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return value.encode()


def test_vectors_are_present() -> None:
    assert len(_cases("inclusion")) > 50
    assert len(_cases("consistency")) > 50


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    def run() -> None:
        verify_inclusion(
            _b64(case["leafHash"]),
            case["leafIdx"],
            case["treeSize"],
            [_b64(p) for p in case["proof"] or []],
            _b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    def run() -> None:
        verify_consistency(
            case["size1"],
            case["size2"],
            [_b64(p) for p in case["proof"] or []],
            _b64(case["root1"]),
            _b64(case["root2"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()
