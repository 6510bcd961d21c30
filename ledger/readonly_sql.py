"""``evalbot ledger sql``: one read-only SELECT against the ledger.

Read-only is enforced by the database, not by parsing SQL: SQLite opens the file read-only, and
PostgreSQL runs the query as a single prepared statement (so ``…; DELETE …`` cannot ride along)
inside a READ ONLY transaction that is rolled back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from ledger.dberrors import translated
from ledger.engine import describe_url, make_engine, sqlite_path
from ledger.errors import LedgerError, LedgerInputError, LedgerOpenError

_QUERY_START = re.compile(r"\s*(select|with|values)\b", re.IGNORECASE)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than ``limit``


def run_select(url: str, query: str, *, limit: int | None = None) -> QueryResult:
    where = describe_url(url)
    if not _QUERY_START.match(query):
        raise LedgerInputError(
            f"sql: only SELECT (or WITH … SELECT) queries run here, got {query.strip()[:40]!r}"
        )
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise LedgerOpenError(f"{where}: no ledger here")
    engine = make_engine(url, read_only=True)
    fetch = None if limit is None else limit + 1
    try:
        with translated(where), engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                result = conn.execute(text(query))
                columns = list(result.keys())
                rows = [tuple(r) for r in (result.all() if fetch is None else result.fetchmany(fetch))]
            elif engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
                conn.execution_options(postgresql_readonly=True)
                with conn.begin() as transaction:
                    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    try:
                        cursor.execute(query, prepare=True)
                    except engine.dialect.loaded_dbapi.Error as exc:  # the raw cursor bypasses SQLAlchemy
                        message = str(exc).strip().splitlines()[0]
                        raise LedgerError(f"{where}: database error: {message}") from None
                    columns = [d.name for d in cursor.description or ()]
                    rows = [
                        tuple(r) for r in (cursor.fetchall() if fetch is None else cursor.fetchmany(fetch))
                    ]
                    transaction.rollback()
            else:
                raise LedgerInputError(
                    f"{where}: read-only SQL is supported on SQLite and PostgreSQL (psycopg) ledgers"
                )
    finally:
        engine.dispose()
    truncated = limit is not None and len(rows) > limit
    return QueryResult(columns, rows[:limit] if truncated else rows, truncated)
