"""Engines for a ledger URL, with the transaction behaviour appending to a hash chain needs.

SQLite: WAL (readers never block the writer and see a consistent snapshot), a busy timeout, and
SQLAlchemy emitting BEGIN itself so a write transaction can start as ``BEGIN IMMEDIATE``: the
write lock is taken before the chain head is read, so two writers cannot both extend the same head.
PostgreSQL (and other servers) lock the chain-head row with ``SELECT … FOR UPDATE`` instead, as the
transaction's first statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ledger.errors import LedgerOpenError
from ledger.models import ChainHead

BUSY_TIMEOUT_S = 30.0
_BEGIN_OPTION = "ledger_sqlite_begin"


def describe_url(url: str) -> str:
    """The URL as it may appear in messages: a SQLite file's path, or the URL without its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str, *, read_only: bool = False, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Engine:
    """An engine for ``url``; on SQLite a lock held by another writer is waited for ``busy_timeout_s``
    before the statement fails with ``database is locked`` (:class:`ledger.dberrors.LedgerBusy`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerOpenError(f"{url}: not a database URL") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except Exception as exc:  # unknown dialect, missing driver
            raise LedgerOpenError(f"{describe_url(url)}: cannot use this database URL: {exc}") from None

    connect_args: dict[str, Any] = {"timeout": busy_timeout_s}
    if read_only and parsed.database not in (None, "", ":memory:"):
        # A read-only file URI: the connection itself cannot write, whatever SQL it is given.
        parsed = parsed.set(database=f"file:{Path(parsed.database).resolve()}?mode=ro", query={"uri": "true"})
    engine = create_engine(parsed, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                cursor.execute("PRAGMA journal_mode = WAL")
                # FULL: a committed verdict survives power loss, not just a crash of the process.
                cursor.execute("PRAGMA synchronous = FULL")
            else:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def immediate(engine: Engine) -> Engine:
    """``engine``, its SQLite transactions begun ``BEGIN IMMEDIATE`` (a no-op elsewhere).

    For writers that read before they write (the poller's queue): a deferred transaction that read
    a snapshot another writer has since committed over cannot be upgraded to a write (SQLite fails
    it at once, ignoring the busy timeout); an immediate one waits for the lock before reading.
    """
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will append, holding the ledger's write lock from its first statement.

    Everything an append decides on (the chain head, the current frontier, whether a record is
    already there) is read under the lock, so no other writer can change it before the commit.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name != "sqlite":
                conn.execute(select(ChainHead.id).where(ChainHead.id == 1).with_for_update())
            yield conn


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one consistent state of the ledger from start to end."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn
