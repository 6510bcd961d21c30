"""Append-only triggers: the database itself refuses UPDATE and DELETE on chained rows.

The API already refuses; these stop a well-meaning script or SQL shell too. Someone who drops
them can still edit rows, and `evalbot ledger verify` catches that through the hash chain.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-23
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Fixed here, not imported: this revision froze exactly these tables.
FROZEN = ("signing_keys", "entries", "evaluations", "measurements", "frontier_advances")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in FROZEN:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, 'ledger rows are append-only: {verb} on {table} refused'); END"
                )
        op.execute(
            "CREATE TRIGGER chain_head_forward_only BEFORE UPDATE ON chain_head "
            "WHEN NEW.seq <= OLD.seq OR NEW.id != OLD.id BEGIN "
            "SELECT RAISE(ABORT, 'ledger chain head only moves forward'); END"
        )
        op.execute(
            "CREATE TRIGGER chain_head_no_delete BEFORE DELETE ON chain_head BEGIN "
            "SELECT RAISE(ABORT, 'ledger rows are append-only: DELETE on chain_head refused'); END"
        )
        return
    op.execute(
        "CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME "
        "USING ERRCODE = 'restrict_violation'; END $$"
    )
    op.execute(
        "CREATE FUNCTION ledger_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.seq <= OLD.seq OR NEW.id <> OLD.id THEN "
        "RAISE EXCEPTION 'ledger chain head only moves forward' USING ERRCODE = 'restrict_violation'; "
        "END IF; RETURN NEW; END $$"
    )
    for table in FROZEN:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
    op.execute(
        "CREATE TRIGGER chain_head_forward_only BEFORE UPDATE ON chain_head "
        "FOR EACH ROW EXECUTE FUNCTION ledger_head_forward_only()"
    )
    op.execute(
        "CREATE TRIGGER chain_head_no_delete BEFORE DELETE OR TRUNCATE ON chain_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in FROZEN:
        if sqlite:
            op.execute(f"DROP TRIGGER {table}_no_update")
            op.execute(f"DROP TRIGGER {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    if sqlite:
        op.execute("DROP TRIGGER chain_head_forward_only")
        op.execute("DROP TRIGGER chain_head_no_delete")
        return
    op.execute("DROP TRIGGER chain_head_forward_only ON chain_head")
    op.execute("DROP TRIGGER chain_head_no_delete ON chain_head")
    op.execute("DROP FUNCTION ledger_head_forward_only()")
    op.execute("DROP FUNCTION ledger_refuse_change()")
