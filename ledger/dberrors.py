"""Database failures as one-line ledger errors that name the file or server they came from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from ledger.errors import AppendOnlyError, LedgerError, LedgerOpenError

_CORRUPT = ("file is not a database", "malformed", "disk image", "not a database")


def driver_message(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc.orig).__name__


@contextmanager
def translated(where: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        message = driver_message(exc)
        if "append-only" in message or "only moves forward" in message:
            raise AppendOnlyError(f"{where}: {message}") from None
        if any(marker in message for marker in _CORRUPT):
            raise LedgerOpenError(
                f"{where}: not a SQLite ledger or the file is corrupted ({message})"
            ) from None
        raise LedgerError(f"{where}: database error: {message}") from None
