"""Witnessing between validators: the checkpoints this validator cosigned for others, and the
cosignatures others made on its own checkpoints.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tlog_witnessed",
        sa.Column("origin", sa.String(200), primary_key=True),
        sa.Column("size", SEQ, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("seen_at", TS, nullable=False),
    )
    op.create_table(
        "tlog_cosignatures",
        sa.Column("size", SEQ, primary_key=True, autoincrement=False),
        sa.Column("witness", sa.String(200), primary_key=True),
        sa.Column("witness_key_id", sa.String(8), primary_key=True),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tlog_cosignatures")
    op.drop_table("tlog_witnessed")
