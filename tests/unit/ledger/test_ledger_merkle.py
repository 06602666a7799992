"""The Merkle tree against the RFC 6962 recursive definition, and proof round trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    list_node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1, written recursively as the RFC states it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hash_children(_mth(leaves[:k]), _mth(leaves[k:]))


LEAVES = [hash_leaf(str(i).encode()) for i in range(70)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 70])
def test_roots_agree(n: int) -> None:
    rng = CompactRange()
    for leaf in LEAVES[:n]:
        rng.append(leaf)
    assert root_from_leaves(LEAVES[:n]) == _mth(LEAVES[:n]) == rng.root()
    assert CompactRange.from_subtrees(n, rng.subtrees()).root() == rng.root()


def test_empty_root() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(st.integers(1, 70), st.data())
def test_inclusion_round_trip_and_tamper(size: int, data: st.DataObject) -> None:
    leaves = LEAVES[:size]
    index = data.draw(st.integers(0, size - 1))
    root = root_from_leaves(leaves)
    proof = inclusion_proof(index, size, list_node_hash(leaves))
    verify_inclusion(leaves[index], index, size, proof, root)
    if proof:
        bad = list(proof)
        k = data.draw(st.integers(0, len(bad) - 1))
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(ProofError, match="gives root"):
            verify_inclusion(leaves[index], index, size, bad, root)
        with pytest.raises(ProofError, match="expected"):
            verify_inclusion(leaves[index], index, size, proof[:-1], root)
    with pytest.raises(ProofError, match="outside a tree"):
        verify_inclusion(leaves[index], size, size, proof, root)


@given(st.integers(1, 70), st.data())
def test_consistency_round_trip_and_tamper(size: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, size))
    node_hash = list_node_hash(LEAVES[:size])
    proof = consistency_proof(old, size, node_hash)
    old_root, new_root = root_from_leaves(LEAVES[:old]), root_from_leaves(LEAVES[:size])
    verify_consistency(old, size, proof, old_root, new_root)
    if proof:
        bad = list(proof)
        k = data.draw(st.integers(0, len(bad) - 1))
        bad[k] = bytes(32)
        with pytest.raises(ProofError):
            verify_consistency(old, size, bad, old_root, new_root)
    with pytest.raises(ProofError):
        verify_consistency(old, size, proof, new_root if old != size else bytes(32), new_root)


def test_proof_generation_bounds() -> None:
    with pytest.raises(ProofError, match="outside a tree of size 3"):
        inclusion_proof(3, 3, list_node_hash(LEAVES[:3]))
    with pytest.raises(ProofError, match="no consistency proof from size 0"):
        consistency_proof(0, 3, list_node_hash(LEAVES[:3]))


def _rfc_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), as the RFC writes it."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if index < k:
        return [*_rfc_path(index, leaves[:k]), _mth(leaves[k:])]
    return [*_rfc_path(index - k, leaves[k:]), _mth(leaves[:k])]


def _rfc_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b), as the RFC writes it."""
    n = len(leaves)
    if m == n:
        return [] if complete else [_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_rfc_subproof(m, leaves[:k], complete), _mth(leaves[k:])]
    return [*_rfc_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


def test_every_proof_up_to_64_leaves_is_the_rfc_one() -> None:
    """Inclusion at every index (edges included) and consistency between every two sizes
    are exactly RFC 6962's PATH and PROOF, verify, and fail at a neighbouring size."""
    node_hash = list_node_hash(LEAVES)
    roots = [_mth(LEAVES[:n]) for n in range(65)]
    for n in range(1, 65):
        for index in range(n):
            proof = inclusion_proof(index, n, node_hash)
            assert proof == _rfc_path(index, LEAVES[:n])
            verify_inclusion(LEAVES[index], index, n, proof, roots[n])
            for other in (index - 1, index + 1):
                if 0 <= other < n:
                    with pytest.raises(ProofError):
                        verify_inclusion(LEAVES[index], other, n, proof, roots[n])
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, node_hash)
            assert proof == _rfc_subproof(m, LEAVES[:n], True)
            verify_consistency(m, n, proof, roots[m], roots[n])
            if m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n - 1, proof, roots[m], roots[n - 1])
