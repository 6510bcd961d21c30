"""The poller's work queue (``ledger/queue.py``): mutable rows, outside the hash chain.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("sha", sa.String(40), nullable=False),
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("verdict", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("recorded_at", TS, nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("publish_attempts", sa.Integer, nullable=False),
        sa.Column("publish_error", sa.Text, nullable=True),
        sa.UniqueConstraint("repo", "target", "sha", name="uq_watch_queue_target_sha"),
    )
    op.create_index("ix_watch_queue_state", "watch_queue", ["state"])


def downgrade() -> None:
    op.drop_index("ix_watch_queue_state", table_name="watch_queue")
    op.drop_table("watch_queue")
