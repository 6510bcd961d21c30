"""Database failures as one-line ledger errors that name the file or server they came from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from ledger.errors import AppendOnlyError, LedgerError, LedgerOpenError

_CORRUPT = ("file is not a database", "malformed", "disk image", "not a database")
# SQLite: another connection holds the write lock past the busy timeout (or a snapshot went stale).
_SQLITE_BUSY = ("database is locked", "database table is locked", "database schema is locked")
# PostgreSQL SQLSTATEs of a conflict that a new transaction can get past: serialization failure,
# deadlock, lock not available, and a statement cancelled by lock_timeout / statement_timeout.
_PG_RETRYABLE = {"40001", "40P01", "55P03", "57014"}


class LedgerBusy(LedgerError):
    """Another writer holds the database's lock: the same transaction, tried again later, can succeed."""


def driver_message(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc.orig).__name__


def is_busy(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a lock conflict with another writer rather than a fault of the database."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _PG_RETRYABLE:
        return True
    return any(marker in driver_message(exc) for marker in _SQLITE_BUSY)


@contextmanager
def translated(where: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        message = driver_message(exc)
        if is_busy(exc):
            raise LedgerBusy(f"{where}: locked by another writer ({message})") from None
        if "append-only" in message or "only moves forward" in message:
            raise AppendOnlyError(f"{where}: {message}") from None
        if any(marker in message for marker in _CORRUPT):
            raise LedgerOpenError(
                f"{where}: not a SQLite ledger or the file is corrupted ({message})"
            ) from None
        raise LedgerError(f"{where}: database error: {message}") from None
