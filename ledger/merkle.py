"""The RFC 6962 / RFC 9162 Merkle tree: roots, inclusion and consistency proofs.

Hashes are domain-separated: a leaf is ``SHA-256(0x00 || data)`` and an
interior node is ``SHA-256(0x01 || left || right)``. The tree over ``n``
leaves splits at the largest power of two below ``n`` (RFC 9162 §2.1.1), which
is the same tree as pairing nodes level by level and carrying an odd last node
up unchanged. That equivalence lets :func:`root_from_leaves` and
:class:`CompactRange` work iteratively, in linear time and without recursion.

Proof *generation* takes a ``node_hash(start, end)`` callable, so the same
code serves an in-memory list of leaves and the SQLite store (which keeps the
hash of every complete, aligned subtree). Proof *verification* follows the
iterative algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 and raises
:class:`~ledger.errors.ProofError` saying what did not match; it never returns
a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ledger.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "list_node_hash",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32

#: The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256

#: ``node_hash(start, end)`` returns MTH(D[start:end]).
NodeHash = Callable[[int, int], bytes]


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Return the largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash over ``leaves`` (already leaf-hashed).

    Runs level by level, so a million leaves cost a million hash calls and no
    recursion.
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if odd is not None:
            nxt.append(odd)
        level = nxt
    return level[0]


class CompactRange:
    """The right frontier of a growing tree: one hash per set bit of its size.

    Appending a leaf merges equal-sized complete subtrees, so the range holds at
    most ``log2(size)`` hashes and :meth:`root` costs as many hash calls.
    ``on_node(level, index, hash)`` is called for every complete subtree that an
    append finishes (level >= 1), which is how the store fills its node table.
    """

    __slots__ = ("_hashes", "_levels", "size")

    def __init__(self) -> None:
        self.size = 0
        self._hashes: list[bytes] = []
        self._levels: list[int] = []

    @classmethod
    def from_subtrees(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild a range from the hashes of the complete subtrees of ``size``, left first.

        Raises:
            ProofError: the number of hashes does not match the set bits of ``size``.
        """
        levels = [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        if len(levels) != len(hashes):
            raise ProofError(
                f"compact range for size {size} needs {len(levels)} hashes, got {len(hashes)}"
            )
        rng = cls()
        rng.size = size
        rng._levels = levels
        rng._hashes = list(hashes)
        return rng

    def append(self, leaf: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add one leaf hash at index ``self.size``."""
        hashes, levels = self._hashes, self._levels
        hashes.append(leaf)
        levels.append(0)
        self.size += 1
        while len(levels) > 1 and levels[-1] == levels[-2]:
            right = hashes.pop()
            level = levels.pop() + 1
            merged = _sha256(b"\x01" + hashes[-1] + right).digest()
            hashes[-1] = merged
            levels[-1] = level
            if on_node is not None:
                on_node(level, (self.size >> level) - 1, merged)

    def root(self) -> bytes:
        """Return the Merkle tree hash of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = _sha256(b"\x01" + h + acc).digest()
        return acc

    def subtrees(self) -> list[bytes]:
        """Return the complete-subtree hashes, left first."""
        return list(self._hashes)


def list_node_hash(leaves: Sequence[bytes]) -> NodeHash:
    """Return a ``node_hash`` over an in-memory list of leaf hashes."""

    def node_hash(start: int, end: int) -> bytes:
        return root_from_leaves(leaves[start:end])

    return node_hash


def inclusion_proof(index: int, size: int, node_hash: NodeHash) -> list[bytes]:
    """Return the audit path for leaf ``index`` in the tree of ``size`` leaves (RFC 6962 PATH).

    Raises:
        ProofError: ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    # Walk down from the root; each step records the sibling subtree, and the
    # path is read bottom-up, hence the reversal at the end.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(node_hash(start + k, end))
            end = start + k
        else:
            path.append(node_hash(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, node_hash: NodeHash) -> list[bytes]:
    """Return the RFC 6962 consistency proof from ``old_size`` to ``new_size``.

    Raises:
        ProofError: the sizes are not ``0 < old_size <= new_size``.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    proof: list[bytes] = []
    start, end, m = 0, new_size, old_size
    complete = True
    # Iterative form of SUBPROOF(m, D[start:end], complete); siblings are
    # collected top-down and emitted bottom-up.
    while m != end:
        k = _split(end - start)
        if m - start <= k:
            proof.append(node_hash(start + k, end))
            end = start + k
        else:
            proof.append(node_hash(start, start + k))
            start += k
            complete = False
    if not complete:
        proof.append(node_hash(start, end))
    proof.reverse()
    return proof


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` with ``root``.

    This is the algorithm of RFC 9162 §2.1.3.2.

    Raises:
        ProofError: the index is out of range, the proof has the wrong length, or
            the computed root differs from ``root``.
    """
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    # The path length is fixed by (index, size): an inner part below the point
    # where the paths to index and size-1 diverge, plus one hash per set bit above.
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + bin(index >> inner).count("1")
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} in size {size} has {len(proof)} hashes, "
            f"expected {expected}"
        )
    fn, sn, r = index, size - 1, leaf
    sha = _sha256
    for p in proof:
        _check_hash("proof hash", p)
        if sn == 0:
            raise ProofError(f"inclusion proof for leaf {index} in size {size} is too long")
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof for leaf {index} in size {size} is too short")
    if r != root:
        raise ProofError(
            f"inclusion proof for leaf {index} in size {size} gives root {r.hex()}, "
            f"expected {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree of ``new_size`` extends the tree of ``old_size`` (RFC 9162 §2.1.4.2).

    A proof from size 0 is refused: every tree extends the empty one, so a
    protocol that wants that rule applies it before calling this function.

    Raises:
        ProofError: the sizes are out of order or zero, the proof has the wrong
            shape, or either recomputed root differs from the one given.
    """
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise ProofError(f"sizes are equal ({old_size}) but the proof is not empty")
        if old_root != new_root:
            raise ProofError(f"sizes are equal ({old_size}) but the roots differ")
        return
    if not proof:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is empty")
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for p in proof:
        _check_hash("proof hash", p)
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # The proof length is fixed by the sizes, exactly as for inclusion.
    inner = (fn ^ sn).bit_length()
    expected = 1 + inner + bin(fn >> inner).count("1")
    if len(path) != expected:
        given = len(proof)
        want = expected - (len(path) - given)
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} has {given} hashes, expected {want}"
        )
    fr = sr = path[0]
    sha = _sha256
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is too short")
    if fr != old_root:
        raise ProofError(
            f"consistency proof gives old root {fr.hex()} for size {old_size}, "
            f"expected {old_root.hex()}"
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof gives new root {sr.hex()} for size {new_size}, "
            f"expected {new_root.hex()}"
        )
