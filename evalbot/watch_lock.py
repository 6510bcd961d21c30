"""One ``evalbot watch`` per ledger: an exclusive ``flock`` on a file next to the ledger.

The kernel releases a ``flock`` when its process dies, SIGKILL included, so a crashed watcher never
leaves a stale lock behind. A ledger on a database server (PostgreSQL) is locked through a file in
the data directory named after its URL: that protects one host; validators sharing one server
database across hosts must run the watcher on one of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import make_url

from evalbot.errors import EvalbotError


def lock_path(ledger_url: str, data_dir: Path) -> Path:
    url = make_url(ledger_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(f"{url.database}.watch.lock")
    digest = hashlib.sha256(ledger_url.encode()).hexdigest()[:16]
    return data_dir / f"watch-{digest}.lock"


class InstanceLock:
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

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
