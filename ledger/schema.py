"""Schema revisions: alembic driven from code, and the check every open makes before trusting a file.

The migration scripts ship inside the package (``ledger/migrations``), so an installed evalbot can
create and upgrade ledgers without an ``alembic.ini`` or a source checkout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from ledger.errors import LedgerOpenError, SchemaVersionError

SCRIPT_LOCATION = "ledger:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic config for the packaged scripts; ``connection`` is the one env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:  # more than one head means two migrations claim the same parent
        raise SchemaVersionError("the ledger migrations have several heads; merge them (see docs/ledger.md)")
    return head


class State(enum.Enum):
    EMPTY = "empty"  # no tables at all: a fresh file or database
    CURRENT = "current"
    OLDER = "older"


@dataclass(frozen=True)
class SchemaStatus:
    state: State
    revision: str | None
    head: str


def status(conn: Connection, where: str) -> SchemaStatus:
    """Where this database stands; raises for anything that is not an evalbot ledger we can read."""
    head = head_revision()
    revisions = MigrationContext.configure(conn).get_current_heads()
    if not revisions:
        tables = sorted(inspect(conn).get_table_names())
        if tables:
            shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
            raise LedgerOpenError(f"{where}: not an evalbot ledger (no schema revision; tables: {shown})")
        return SchemaStatus(State.EMPTY, None, head)
    if len(revisions) > 1:
        raise SchemaVersionError(f"{where}: schema is at several revisions at once ({', '.join(revisions)})")
    (revision,) = revisions
    script = script_directory()
    if revision not in {rev.revision for rev in script.walk_revisions()}:
        raise SchemaVersionError(
            f"{where}: unknown schema revision {revision!r} "
            f"(written by a newer evalbot? this one knows up to {head!r})"
        )
    return SchemaStatus(State.CURRENT if revision == head else State.OLDER, revision, head)


def upgrade(engine: Engine, where: str, revision: str = "head") -> tuple[str | None, str]:
    """Bring the database to ``revision`` in one transaction; returns (revision before, after)."""
    with engine.begin() as conn:
        before = status(conn, where).revision
        command.upgrade(alembic_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return before, after
