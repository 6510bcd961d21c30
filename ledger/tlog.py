"""The ledger as a transparency log: its Merkle tree kept in ``tlog_nodes``, roots, proofs, checkpoints.

The tree (:mod:`ledger.merkle`, RFC 9162) has one leaf per chain entry, in ``seq`` order; a leaf's
data is the entry's hash (the 32 bytes of ``entries.entry_hash``), which binds the entry's content,
position, kind, time, key and predecessor. Every append stores the nodes it completes in the same
transaction as the entry, so a root of any size and a proof between any two sizes need only
O(log n) indexed reads. Everything about the tree that is not SQL lives in ``ledger.merkle``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select

from ledger import merkle
from ledger.errors import LedgerError
from ledger.models import TreeNode

_STREAM_ROWS = 10_000


class TreeError(LedgerError):
    """The stored tree cannot answer (a node is missing: the ledger was damaged or never migrated)."""


def leaf_of(entry_hash_hex: str) -> bytes:
    return merkle.leaf_hash(bytes.fromhex(entry_hash_hex))


def _fetch(conn: Connection, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    found: dict[tuple[int, int], bytes] = {}
    unique = sorted(set(wanted))
    for i in range(0, len(unique), 200):
        chunk = unique[i : i + 200]
        rows = conn.execute(
            select(TreeNode.level, TreeNode.idx, TreeNode.hash).where(
                or_(*(and_(TreeNode.level == level, TreeNode.idx == idx) for level, idx in chunk))
            )
        )
        for row in rows:
            found[(row.level, row.idx)] = bytes.fromhex(row.hash)
    missing = [n for n in unique if n not in found]
    if missing:
        level, idx = missing[0]
        raise TreeError(f"tlog_nodes: node (level {level}, index {idx}) is missing; run `evalbot ledger verify`")
    return found


def compact_range(conn: Connection, size: int) -> merkle.CompactRange:
    """The right edge of the stored tree of ``size`` leaves, ready for appending."""
    nodes = merkle.perfect_nodes(0, size)
    found = _fetch(conn, nodes)
    return merkle.CompactRange(size, [found[n] for n in nodes])


def append(conn: Connection, size: int, entry_hashes: Sequence[str]) -> None:
    """Add the leaves of entries ``size + 1 …`` (their hashes, in order) and the nodes they complete."""
    if not entry_hashes:
        return
    edge = compact_range(conn, size)
    rows = [
        {"level": level, "idx": idx, "hash": digest.hex()}
        for entry_hash in entry_hashes
        for level, idx, digest in edge.append(leaf_of(entry_hash))
    ]
    conn.execute(insert(TreeNode), rows)


def root(conn: Connection, size: int) -> bytes:
    nodes = merkle.perfect_nodes(0, size)
    found = _fetch(conn, nodes)
    return merkle.fold([found[n] for n in nodes])


def _proof(conn: Connection, make: Any) -> list[bytes]:
    """Run a proof generator twice: once to learn which nodes it needs, then with them (one query)."""
    wanted: list[tuple[int, int]] = []

    def record(start: int, end: int) -> bytes:
        wanted.extend(merkle.perfect_nodes(start, end))
        return merkle.EMPTY_ROOT

    make(record)
    found = _fetch(conn, wanted)
    proof: list[bytes] = make(lambda start, end: merkle.fold([found[n] for n in merkle.perfect_nodes(start, end)]))
    return proof


def inclusion_proof(conn: Connection, index: int, size: int) -> list[bytes]:
    return _proof(conn, lambda source: merkle.inclusion_proof(index, size, source))


def consistency_proof(conn: Connection, old_size: int, new_size: int) -> list[bytes]:
    return _proof(conn, lambda source: merkle.consistency_proof(old_size, new_size, source))


def stored_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(TreeNode)).scalar_one())


def node_count(size: int) -> int:
    """How many nodes the tree of ``size`` leaves stores: every perfect subtree, leaves included."""
    return 2 * size - bin(size).count("1")


@dataclass
class TreeCheck:
    """Rebuilds the tree from the entries as ``verify`` streams them, and compares every stored node.

    One cursor per level, each in ``idx`` order: the nodes an append completes are exactly the next
    node of each level it reaches, so the stored tree is checked in one pass without holding it.
    """

    conn: Connection

    def __post_init__(self) -> None:
        self._edge = merkle.CompactRange()
        self._levels: list[Iterator[Any]] = []

    def _next(self, level: int) -> Any:
        while len(self._levels) <= level:
            statement = (
                select(TreeNode.idx, TreeNode.hash).where(TreeNode.level == len(self._levels)).order_by(TreeNode.idx)
            )
            # Statement options, not the connection's: those would stay on for every later statement.
            self._levels.append(iter(self.conn.execute(statement.execution_options(yield_per=_STREAM_ROWS))))
        return next(self._levels[level], None)

    def add(self, seq: int, entry_hash: str) -> str | None:
        """Append entry ``seq``'s leaf; a message if a node it completes is stored wrong or missing."""
        for level, idx, digest in self._edge.append(leaf_of(entry_hash)):
            stored = self._next(level)
            where = f"Merkle tree node (level {level}, index {idx})"
            if stored is None or stored.idx > idx:
                return f"entry {seq}: its {where} is missing from tlog_nodes (deleted, or never migrated?)"
            if stored.idx < idx:
                return f"tlog_nodes has a node (level {level}, index {stored.idx}) the chain does not make (inserted?)"
            if stored.hash != digest.hex():
                return f"entry {seq}: its {where} does not match the entries (tree edited?)"
        return None

    def root(self) -> bytes:
        return self._edge.root()
