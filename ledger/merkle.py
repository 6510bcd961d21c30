"""An RFC 9162 (Certificate Transparency 2.0) Merkle tree over the ledger's entries, as pure functions.

Hashes (RFC 9162 §2.1.1, SHA-256): a leaf is ``SHA-256(0x00 || data)``, an interior node
``SHA-256(0x01 || left || right)``, the empty tree ``SHA-256("")``. The tree over ``n`` leaves
splits at the largest power of two below ``n``, so every left subtree is perfect.

Proofs are generated from any source of subtree hashes (``subtree(start, end)``: the root of leaves
``[start, end)``, only ever asked for the aligned ranges the recursion of §2.1.3.1 / §2.1.4.1
produces), and verified by the algorithms of §2.1.3.2 and §2.1.4.2: compute the root the proof
implies, then compare it with the root claimed, raising :class:`ProofError` with both values.

:class:`CompactRange` is the tree's right edge (one perfect-subtree root per set bit of the size):
appending a leaf is O(log n) and returns the interior nodes it completed, for storage; its root is
the root of the whole tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]  # root hash of leaves [start, end)


class ProofError(ValueError):
    """A proof that does not prove what it claims; ``expected``/``found`` are the roots compared."""

    def __init__(self, message: str, *, expected: bytes | None = None, found: bytes | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of §2.1.1 from leaf hashes, by the recursive definition (the reference oracle)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def in_memory(leaf_hashes: Sequence[bytes]) -> Subtree:
    """A subtree source over a list of leaf hashes (tests, small trees)."""
    return lambda start, end: root_of(leaf_hashes[start:end])


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[size]) of §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:  # walk down from the root, collecting siblings, then reverse
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of §2.1.4.1 (empty when the sizes are equal or old_size is 0)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    path: list[bytes] = []
    start, end, whole = 0, new_size, True  # SUBPROOF(m, D[start:end], whole)
    m = old_size
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        path.append(subtree(start, end))
    path.reverse()
    return path


def _checked_path(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof element {i} is {len(p)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for leaf hash ``leaf`` at ``index`` (§2.1.3.2 steps 1-4)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    _checked_path(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long for a tree of size {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short for a tree of size {size}")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    found = root_from_inclusion_proof(index, size, leaf, proof)
    if found != root:
        raise ProofError(
            f"inclusion proof of leaf {index} leads to root {found.hex()}, not {root.hex()}",
            expected=root,
            found=found,
        )


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """§2.1.4.2: ``proof`` shows the tree of ``new_size`` extends the tree of ``old_size``.

    Size 0 is refused (as in transparency-dev/merkle): an empty tree commits to nothing, so
    callers treat an empty old checkpoint on its own.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size {old_size} cannot grow into size {new_size} (the log shrank?)")
    if old_size == 0:
        raise ProofError("no consistency proof from an empty tree (it commits to nothing)")
    _checked_path(proof)
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(
                f"two different roots for size {old_size}: {old_root.hex()} and {new_root.hex()} (a fork)",
                expected=old_root,
                found=new_root,
            )
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(
            f"consistency proof leads to old root {fr.hex()}, not {old_root.hex()}", expected=old_root, found=fr
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof leads to new root {sr.hex()}, not {new_root.hex()}", expected=new_root, found=sr
        )


def perfect_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The (level, index) of the perfect subtrees that make up ``[start, end)``, left to right.

    ``start`` must be a multiple of the largest of them (true of every range the proofs ask for):
    the range is then the binary decomposition of its length, largest first.
    """
    nodes: list[tuple[int, int]] = []
    size = end - start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            if start % (1 << level):
                raise ValueError(f"range [{start}, {end}) is not aligned")
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over perfect subtrees given largest first (the right edge is folded in first)."""
    if not hashes:
        return EMPTY_ROOT
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = node_hash(h, r)
    return r


@dataclass
class CompactRange:
    """The perfect-subtree roots covering leaves ``[0, size)``, largest first (RFC 9162's right edge)."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns every node it completed as (level, index, hash), the leaf first."""
        index, level, h = self.size, 0, leaf
        made = [(0, index, h)]
        while index & 1:  # a right child: merge with the left sibling on the edge
            h = node_hash(self.hashes.pop(), h)
            index, level = index >> 1, level + 1
            made.append((level, index, h))
        self.hashes.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        return fold(self.hashes)
