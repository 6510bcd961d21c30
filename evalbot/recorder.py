"""Where the poller writes results: the ledger, seen through the things the poller needs."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from evalbot.pipeline import Job, Verdict


class Recorder(Protocol):
    def frontier(self, repo: str, base_ref: str) -> str | None:
        """The current frontier commit PRs are measured against (None before the first one)."""
        ...

    def record(self, job: Job, verdict: Verdict, started_at: datetime, finished_at: datetime) -> None:
        """Append the verdict; for a verified base-branch commit also the frontier advance.

        Must be idempotent: a crash after the append and before the queue notes it repeats the call,
        and that must not append a second row.
        """
        ...

    def record_failure(self, job: Job, error: str, attempts: int, started_at: datetime,
                       finished_at: datetime) -> None:
        """Append an evaluation that could not be completed (``attempts`` tries, the last ``error``).

        No label and never a frontier advance. Idempotent like :meth:`record` for the same arguments.
        """
        ...
