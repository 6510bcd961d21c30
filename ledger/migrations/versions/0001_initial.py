"""Initial ledger schema: the hash chain, evaluations with measurements, frontier advances, keys.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Written out here rather than imported from ledger.models: a migration must keep describing the
# schema of its own revision after the models move on.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("added_at", TS, nullable=False),
    )
    chain_head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("signature", sa.String(128), nullable=True),
        sa.CheckConstraint("id = 1", name="chain_head_single_row"),
    )
    op.create_table(
        "entries",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("key_id", sa.String(16), sa.ForeignKey("signing_keys.key_id"), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    op.create_table(
        "evaluations",
        sa.Column("seq", SEQ, sa.ForeignKey("entries.seq"), primary_key=True, autoincrement=False),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("pr", sa.Integer, nullable=True),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("base_commit", sa.String(64), nullable=True),
        sa.Column("frontier_commit", sa.String(64), nullable=True),
        sa.Column("gpu", sa.String(200), nullable=False),
        sa.Column("gpu_class", sa.String(100), nullable=False),
        sa.Column("basket", sa.String(100), nullable=False),
        sa.Column("evalbot_version", sa.String(50), nullable=False),
        sa.Column("policy_hash", sa.String(100), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.String(8), nullable=True),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
    )
    op.create_index("ix_evaluations_commit_sha", "evaluations", ["commit_sha"])
    op.create_index("ix_evaluations_author_finished", "evaluations", ["author", "finished_at"])
    op.create_index("ix_evaluations_finished_at", "evaluations", ["finished_at"])
    op.create_table(
        "measurements",
        sa.Column("evaluation_seq", SEQ, sa.ForeignKey("evaluations.seq"), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("tokens_per_s", sa.Double, nullable=True),
        sa.Column("frontier_tokens_per_s", sa.Double, nullable=True),
        sa.Column("speedup", sa.Double, nullable=True),
        sa.Column("speedup_ci_low", sa.Double, nullable=True),
        sa.Column("speedup_ci_high", sa.Double, nullable=True),
        sa.Column("gates_passed", sa.Boolean, nullable=False),
    )
    op.create_table(
        "frontier_advances",
        sa.Column("seq", SEQ, sa.ForeignKey("entries.seq"), primary_key=True, autoincrement=False),
        sa.Column("basket", sa.String(100), nullable=False),
        sa.Column("gpu_class", sa.String(100), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("previous_commit", sa.String(64), nullable=True),
        sa.Column("delta", sa.Double, nullable=False),
        sa.Column("model_deltas", sa.Text, nullable=False),
        sa.Column("evaluation_seq", SEQ, sa.ForeignKey("evaluations.seq"), nullable=True),
        sa.Column("advanced_at", TS, nullable=False),
    )
    op.create_index("ix_frontier_basket_gpu_seq", "frontier_advances", ["basket", "gpu_class", "seq"])
    # The empty chain: appenders lock and advance this row, so it must exist before the first append.
    op.bulk_insert(
        chain_head, [{"id": 1, "seq": 0, "entry_hash": "0" * 64, "key_id": None, "signature": None}]
    )


def downgrade() -> None:
    for table in (
        "frontier_advances",
        "measurements",
        "evaluations",
        "entries",
        "chain_head",
        "signing_keys",
    ):
        op.drop_table(table)
