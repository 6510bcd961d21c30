"""Alembic environment for the ledger: migrates the connection evalbot hands over, or ``-x url=…``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ledger.engine import make_engine
from ledger.models import Base

config = context.config


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    if context.is_offline_mode():
        raise SystemExit("ledger migrations run online only: use `evalbot ledger migrate`")
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit(
            "give the ledger URL: alembic -x url=sqlite:///path/ledger.sqlite … (or `evalbot ledger migrate`)"
        )
    with make_engine(url).begin() as conn:
        _migrate(conn)


_run()
