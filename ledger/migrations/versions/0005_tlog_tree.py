"""The ledger as a transparency log: the RFC 9162 Merkle tree over the entries, built for existing rows.

``tlog_nodes`` holds every perfect subtree of the tree whose leaves are the entries in ``seq`` order
(leaf data: the 32 bytes of the entry hash). Existing ledgers get their tree here, streamed from the
chain in one pass; the chain itself is not touched, so every old check still holds. The table is
append-only like the chain (a node never changes once its subtree is complete).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger import merkle  # the RFC 9162 hashes: fixed by the RFC, not by a revision of the schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 20_000


def _backfill(nodes: sa.Table) -> int:
    conn = op.get_bind()
    edge = merkle.CompactRange()
    batch: list[dict[str, object]] = []
    # A statement option: on the connection it would stay on, and PostgreSQL cannot DECLARE a cursor for DDL.
    rows = conn.execute(sa.text("SELECT seq, entry_hash FROM entries ORDER BY seq").execution_options(yield_per=_BATCH))
    for seq, entry_hash in rows:
        if seq != edge.size + 1:
            raise RuntimeError(
                f"entries: entry {edge.size + 1} is missing (next is {seq}); run `evalbot ledger verify`"
            )
        for level, idx, digest in edge.append(merkle.leaf_hash(bytes.fromhex(entry_hash))):
            batch.append({"level": level, "idx": idx, "hash": digest.hex()})
        if len(batch) >= _BATCH:
            conn.execute(sa.insert(nodes), batch)
            batch = []
    if batch:
        conn.execute(sa.insert(nodes), batch)
    return edge.size


def upgrade() -> None:
    nodes = op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", SEQ, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    _backfill(nodes)
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER tlog_nodes_no_{verb.lower()} BEFORE {verb} ON tlog_nodes BEGIN "
                f"SELECT RAISE(ABORT, 'ledger rows are append-only: {verb} on tlog_nodes refused'); END"
            )
        return
    # ledger_refuse_change() is revision 0002's.
    op.execute(
        "CREATE TRIGGER tlog_nodes_append_only BEFORE UPDATE OR DELETE ON tlog_nodes "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER tlog_nodes_no_truncate BEFORE TRUNCATE ON tlog_nodes "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER tlog_nodes_no_update")
        op.execute("DROP TRIGGER tlog_nodes_no_delete")
    else:
        op.execute("DROP TRIGGER tlog_nodes_append_only ON tlog_nodes")
        op.execute("DROP TRIGGER tlog_nodes_no_truncate ON tlog_nodes")
    op.drop_table("tlog_nodes")
