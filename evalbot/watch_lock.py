"""One ``evalbot watch`` per ledger.

* A SQLite ledger (or any other non-PostgreSQL URL): an exclusive ``flock`` on a file next to the
  ledger file, at its resolved path (or in the data directory, named after the URL). The kernel
  releases a ``flock`` when its process dies, SIGKILL included, so a crashed watcher never leaves a
  stale lock behind.
* A PostgreSQL ledger: a session-level advisory lock held on a dedicated connection, so watchers on
  different hosts sharing the database exclude each other too. The server releases it when the
  session ends, which a killed process's closed socket does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from evalbot.errors import EvalbotError

# pg_try_advisory_lock takes a signed 64-bit key; this one is derived from a fixed name.
_ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"evalbot watch").digest()[:8], "big", signed=True)


class InstanceLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> None: ...


def lock_path(ledger_url: str, data_dir: Path) -> Path:
    """The lock file of a ledger: one per ledger file, however the URL spells its path.

    The path is resolved (symlinks to the file or to a directory above it, ``..``, a relative
    path), so two watchers that reach one file by different names take the same lock.
    """
    url = make_url(ledger_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(f"{os.path.realpath(Path(url.database).expanduser())}.watch.lock")
    digest = hashlib.sha256(ledger_url.encode()).hexdigest()[:16]
    return data_dir / f"watch-{digest}.lock"


def instance_lock(ledger_url: str, data_dir: Path) -> InstanceLock:
    if make_url(ledger_url).get_backend_name() == "postgresql":
        return AdvisoryLock(ledger_url)
    return FileLock(lock_path(ledger_url, data_dir))


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EvalbotError(
                f"another evalbot watch (pid {holder}) is running for this ledger (lock {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class AdvisoryLock:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Connection | None = None

    def acquire(self) -> None:
        where = make_url(self.url).render_as_string(hide_password=True)
        conn: Connection | None = None
        try:
            conn = create_engine(self.url, poolclass=NullPool).connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _ADVISORY_KEY}).scalar()
            conn.commit()  # the lock is session-level: it outlives this transaction
        except SQLAlchemyError as exc:
            if conn is not None:
                conn.close()
            raise EvalbotError(f"{where}: cannot take the watcher lock: {exc.__class__.__name__}") from None
        if not got:
            conn.close()
            raise EvalbotError(f"another evalbot watch is running for this ledger (advisory lock on {where})")
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # ending the session releases the advisory lock
            self._conn = None

    def __enter__(self) -> AdvisoryLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
