"""The poller's queue remembers which result a PR's comment and label show (``shown_at``).

A PR whose head goes back to a commit that already has a result (A1 → A2 → A1) gets that stored
result published again instead of a second evaluation; ``shown_at`` is how the poller tells "the
comment shows this head" from "the comment shows another commit of the PR". Rows published before
this revision are taken as shown when they were published.

Revision ID: 0004
Revises: 0003
Create Date: 2025-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("watch_queue", sa.Column("shown_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE watch_queue SET shown_at = published_at "
        "WHERE published_at IS NOT NULL AND target LIKE 'pr/%' AND state IN ('done', 'failed')"
    )


def downgrade() -> None:
    with op.batch_alter_table("watch_queue") as batch:
        batch.drop_column("shown_at")
