"""The poller's work queue, kept in the ledger database: one row per (repository, target, commit).

Not part of the hash chain: these rows change state as work progresses (the append-only rules cover
only the chained tables). The table is created by migration 0003 (``shown_at``: 0004).

A row goes ``queued → running → done`` (or ``failed`` when its evaluation could not be completed:
an infrastructure fault that would repeat, or ``max_attempts`` transient ones; or ``dropped`` when
its PR was closed or force-pushed before it ran). Only a verdict is recorded in the ledger and
published on GitHub, in separate steps with their own timestamps, so a crash or a GitHub fault
between them is finished later without evaluating again. A failure is the validator's problem, not
the contributor's: it stays in this table (``last_error``) and the operator's log, never in the
public ledger or on the PR. A row left ``running`` by a process that died is re-queued at start-up
(one instance per ledger holds the lock, and :meth:`JobQueue.start` is a compare-and-set on the
row's state, so no two processes run one row). A ``failed`` row goes back to ``queued`` only
through :meth:`JobQueue.retry` (the poller does that once per process start, for heads).

SQLite transactions here begin ``BEGIN IMMEDIATE`` (see :func:`ledger.engine.immediate`); a lock
held by another writer past the busy timeout surfaces as :class:`ledger.dberrors.LedgerBusy`, which
the caller retries.

``published_at`` says the result reached GitHub (at least the commit status); ``shown_at`` says the
PR's sticky comment and label were set to it. A PR whose head returns to a commit with a result
(A1 → A2 → A1) is found by :meth:`JobQueue.republish_stale` and published again from the row.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Integer, String, Text, UniqueConstraint, create_engine, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from ledger.dberrors import translated
from ledger.engine import describe_url, immediate
from ledger.models import Base, UTCDateTime

MAX_PREVIOUS = 10  # superseded verdicts of one head kept for its comment


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DROPPED = "dropped"


class QueueRow(Base):
    __tablename__ = "watch_queue"
    __table_args__ = (UniqueConstraint("repo", "target", "sha", name="uq_watch_queue_target_sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repo: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(300))  # "pr/7" or "branch/main"
    sha: Mapped[str] = mapped_column(String(40))
    job: Mapped[str] = mapped_column(Text)  # the job's fields as JSON (what to fetch, the baseline)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    verdict: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON; None until done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    publish_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the PR's comment and label were last set to this row's result (None: never, or status only).
    shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class Entry:
    id: int
    repo: str
    target: str
    sha: str
    job: dict[str, Any]
    state: State
    attempts: int
    last_error: str | None
    verdict: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    recorded_at: datetime | None
    published_at: datetime | None
    publish_attempts: int
    shown_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _entry(row: QueueRow) -> Entry:
    return Entry(
        id=row.id,
        repo=row.repo,
        target=row.target,
        sha=row.sha,
        job=json.loads(row.job),
        state=State(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        verdict=json.loads(row.verdict) if row.verdict else None,
        started_at=row.started_at,
        finished_at=row.finished_at,
        recorded_at=row.recorded_at,
        published_at=row.published_at,
        publish_attempts=row.publish_attempts,
        shown_at=row.shown_at,
    )


class JobQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._where = describe_url(str(engine.url))
        self._sessions = sessionmaker(immediate(engine), expire_on_commit=False)

    @classmethod
    def in_memory(cls) -> JobQueue:
        """A throw-away queue (``--dry-run``: nothing the real daemon reads is touched)."""
        engine = create_engine("sqlite://")
        QueueRow.__table__.create(engine)
        return cls(engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with translated(self._where), self._sessions.begin() as session:
            yield session

    def _row(self, session: Session, entry_id: int) -> QueueRow:
        row = session.get(QueueRow, entry_id)
        if row is None:
            raise KeyError(f"no queue entry {entry_id}")
        return row

    def recover(self) -> list[Entry]:
        """Re-queue what a dead process left running; returns those entries."""
        with self._session() as s:
            rows = s.scalars(select(QueueRow).where(QueueRow.state == State.RUNNING)).all()
            for row in rows:
                row.state = State.QUEUED
            return [_entry(r) for r in rows]

    def enqueue(self, repo: str, target: str, sha: str, job: Mapping[str, Any]) -> tuple[Entry, bool]:
        """Queue a commit for a target unless already known; returns (entry, created).

        When the same commit already has a verdict for another target (the same SHA pushed to a
        second PR, or merged into the base branch as is) the verdict is reused and the new entry is
        born ``done``: a commit is evaluated once.
        """
        with self._session() as s:
            existing = s.scalars(
                select(QueueRow).where(QueueRow.repo == repo, QueueRow.target == target, QueueRow.sha == sha)
            ).one_or_none()
            if existing is not None and existing.state != State.DROPPED:
                return _entry(existing), False
            if existing is not None:  # e.g. a draft made ready again: the drop no longer holds
                existing.state, existing.last_error = State.QUEUED, None
                return _entry(existing), True
            done = s.scalars(
                select(QueueRow)
                .where(QueueRow.repo == repo, QueueRow.sha == sha, QueueRow.state == State.DONE)
                .order_by(QueueRow.id)
                .limit(1)
            ).one_or_none()
            now = _now()
            row = QueueRow(
                repo=repo, target=target, sha=sha, job=json.dumps(dict(job), sort_keys=True),
                state=State.QUEUED, attempts=0, created_at=now, publish_attempts=0,
            )
            if done is not None:
                # Recording stays pending: the recorder knows the commit's evaluation is in the ledger
                # already and adds only what this target needs (a frontier advance for the branch).
                row.state, row.verdict, row.finished_at = State.DONE, done.verdict, now
                row.started_at = done.started_at
            s.add(row)
            s.flush()
            return _entry(row), True

    def active(self) -> list[Entry]:
        with self._session() as s:
            rows = s.scalars(
                select(QueueRow).where(QueueRow.state.in_([State.QUEUED, State.RUNNING])).order_by(QueueRow.id)
            ).all()
            return [_entry(r) for r in rows]

    def next_queued(self, exclude_shas: Collection[str] = ()) -> Entry | None:
        """Base-branch commits first (they move the frontier PRs are measured against), then FIFO;
        ``exclude_shas``: commits not to return, for any target (waiting out a retry delay)."""
        with self._session() as s:
            rows = [
                r for r in s.scalars(select(QueueRow).where(QueueRow.state == State.QUEUED).order_by(QueueRow.id))
                if r.sha not in exclude_shas
            ]
            rows = sorted(rows, key=lambda r: (not r.target.startswith("branch/"), r.id))
            return _entry(rows[0]) if rows else None

    def adopt(self, entry_id: int, failed_since: datetime | None = None) -> Entry | None:
        """Give a queued row the result another target of the same commit reached meanwhile.

        A verdict is always taken over (the commit is evaluated once; recording stays pending as in
        :meth:`enqueue`); a failure only when it was reached at or after ``failed_since`` (the
        poller's start: a process does not retry what it saw fail). Returns the updated entry, or
        None when there is nothing to take over.
        """
        with self._session() as s:
            row = self._row(s, entry_id)
            siblings = s.scalars(
                select(QueueRow)
                .where(
                    QueueRow.repo == row.repo,
                    QueueRow.sha == row.sha,
                    QueueRow.id != row.id,
                    QueueRow.state.in_([State.DONE, State.FAILED]),
                )
                .order_by(QueueRow.id)
            ).all()
            now = _now()
            for sibling in siblings:
                if sibling.state == State.DONE:
                    row.state, row.verdict, row.finished_at, row.last_error = State.DONE, sibling.verdict, now, None
                    row.started_at = sibling.started_at
                    return _entry(row)
            for sibling in siblings:
                finished = sibling.finished_at
                if failed_since is not None and finished is not None and finished >= failed_since:
                    row.state, row.attempts, row.last_error = State.FAILED, sibling.attempts, sibling.last_error
                    row.started_at, row.finished_at = sibling.started_at, now
                    return _entry(row)
            return None

    def start(self, entry_id: int) -> Entry | None:
        """Claim a queued row for an evaluation; None when it is not queued any more.

        A compare-and-set on the row's state in one statement: of two processes starting the same
        row, exactly one changes it (rowcount 1) and runs it; the other gets None.
        """
        with self._session() as s:
            claimed = cast(CursorResult[Any], s.execute(
                update(QueueRow)
                .where(QueueRow.id == entry_id, QueueRow.state == State.QUEUED)
                .values(state=State.RUNNING, attempts=QueueRow.attempts + 1, started_at=_now())
                .execution_options(synchronize_session=False)
            ))
            if claimed.rowcount != 1:
                return None
            return _entry(self._row(s, entry_id))

    def finish(self, entry_id: int, verdict: Mapping[str, Any]) -> Entry:
        with self._session() as s:
            row = self._row(s, entry_id)
            row.state, row.verdict, row.finished_at = State.DONE, json.dumps(dict(verdict)), _now()
            row.last_error = None
            return _entry(row)

    def fail_attempt(self, entry_id: int, error: str, max_attempts: int, final: bool = False) -> Entry:
        """An evaluation could not be completed: queue it again, or mark it failed once
        ``max_attempts`` are spent (at once when ``final``: the error would repeat).

        A failed row stays failed until :meth:`retry`; it is neither recorded nor published.
        """
        with self._session() as s:
            row = self._row(s, entry_id)
            row.last_error = error
            if final or row.attempts >= max_attempts:
                row.state, row.finished_at = State.FAILED, _now()
            else:
                row.state = State.QUEUED
            return _entry(row)

    def failed_ids(self) -> set[int]:
        """Every failed row: what the poller may retry after a restart."""
        with self._session() as s:
            return set(s.scalars(select(QueueRow.id).where(QueueRow.state == State.FAILED)).all())

    def retry(self, entry_id: int) -> Entry:
        """Queue a failed row again with fresh attempts."""
        with self._session() as s:
            row = self._row(s, entry_id)
            if row.state != State.FAILED:
                raise ValueError(f"queue entry {entry_id} is {row.state}, not failed")
            row.state, row.attempts = State.QUEUED, 0
            row.started_at = row.finished_at = row.recorded_at = row.published_at = row.shown_at = None
            row.publish_attempts, row.publish_error = 0, None
            return _entry(row)

    def requeue_stale(self, entry_id: int, why: str) -> Entry | None:
        """A done head whose verdict no longer holds (the frontier moved, the policy changed): queued
        again with fresh attempts, the old verdict kept in the job's ``previous`` (newest first, at
        most :data:`MAX_PREVIOUS`) for the comment's history; the ledger keeps it anyway. None when
        the row is no longer done (a compare-and-set, like :meth:`start`)."""
        with self._session() as s:
            row = self._row(s, entry_id)
            if row.state != State.DONE or row.verdict is None:
                return None
            job = json.loads(row.job)
            old = {"verdict": json.loads(row.verdict), "why": why,
                   "finished_at": row.finished_at.isoformat() if row.finished_at else None}
            job["previous"] = [old, *job.get("previous", [])][:MAX_PREVIOUS]
            row.job = json.dumps(job)
            row.state, row.attempts, row.verdict, row.last_error = State.QUEUED, 0, None, None
            row.started_at = row.finished_at = row.recorded_at = row.published_at = row.shown_at = None
            row.publish_attempts, row.publish_error = 0, None
            return _entry(row)

    def abandon(self, entry_id: int) -> Entry:
        """A cancelled evaluation (shutdown) goes back to the queue; the attempt does not count."""
        with self._session() as s:
            row = self._row(s, entry_id)
            row.state, row.attempts = State.QUEUED, max(row.attempts - 1, 0)
            return _entry(row)

    def drop(self, entry_id: int, reason: str) -> Entry:
        with self._session() as s:
            row = self._row(s, entry_id)
            row.state, row.last_error = State.DROPPED, reason
            return _entry(row)

    def unrecorded(self) -> list[Entry]:
        """Verdicts not yet in the ledger."""
        with self._session() as s:
            rows = s.scalars(
                select(QueueRow)
                .where(QueueRow.state == State.DONE, QueueRow.recorded_at.is_(None))
                .order_by(QueueRow.id)
            ).all()
            return [_entry(r) for r in rows]

    def mark_recorded(self, entry_id: int) -> None:
        with self._session() as s:
            self._row(s, entry_id).recorded_at = _now()

    def unpublished(self) -> list[Entry]:
        """Verdicts recorded but not yet on GitHub (first try, or retries after a fault)."""
        with self._session() as s:
            rows = s.scalars(
                select(QueueRow)
                .where(
                    QueueRow.state == State.DONE,
                    QueueRow.recorded_at.is_not(None),
                    QueueRow.published_at.is_(None),
                )
                .order_by(QueueRow.id)
            ).all()
            return [_entry(r) for r in rows]

    def mark_published(self, entry_id: int, shown: bool = False) -> None:
        """Published; ``shown``: the PR's comment and label now show this result (not only a status)."""
        with self._session() as s:
            row = self._row(s, entry_id)
            row.published_at, row.publish_error = _now(), None
            if shown:
                row.shown_at = row.published_at

    def republish_stale(self, repo: str, heads: Mapping[str, str]) -> list[Entry]:
        """Heads whose stored result the PR does not show: their publish becomes pending again.

        ``heads`` maps each open PR's target (``pr/7``) to its head commit. A head's finished,
        published row is stale when the PR's comment and label were never set to it (it was
        published as a status only, while the PR had moved on) or were set to another commit of the
        PR since (A1 → A2 → A1). One query whatever the number of PRs; an idle poll finds nothing.
        """
        if not heads:
            return []
        with self._session() as s:
            rows = s.scalars(
                select(QueueRow).where(
                    QueueRow.repo == repo,
                    QueueRow.target.in_(list(heads)),
                    QueueRow.state == State.DONE,
                )
            ).all()
            newest: dict[str, datetime] = {}
            for row in rows:
                if row.shown_at is not None and (row.target not in newest or row.shown_at > newest[row.target]):
                    newest[row.target] = row.shown_at
            stale = []
            for row in rows:
                if row.sha != heads[row.target] or row.published_at is None:
                    continue  # not the head, or its publish is pending anyway
                if row.shown_at is None or row.shown_at < newest[row.target]:
                    row.published_at, row.publish_attempts, row.publish_error = None, 0, None
                    stale.append(row)
            return [_entry(r) for r in sorted(stale, key=lambda r: r.id)]

    def publish_failed(self, entry_id: int, error: str) -> Entry:
        with self._session() as s:
            row = self._row(s, entry_id)
            row.publish_attempts, row.publish_error = row.publish_attempts + 1, error
            return _entry(row)

    def history(self, repo: str, target: str) -> list[Entry]:
        """Verdicts of one target, newest first: the PR comment's history."""
        with self._session() as s:
            rows = s.scalars(
                select(QueueRow)
                .where(
                    QueueRow.repo == repo,
                    QueueRow.target == target,
                    QueueRow.state == State.DONE,
                )
                .order_by(QueueRow.finished_at.desc(), QueueRow.id.desc())
            ).all()
            return [_entry(r) for r in rows]

    def all(self) -> list[Entry]:
        with self._session() as s:
            return [_entry(r) for r in s.scalars(select(QueueRow).order_by(QueueRow.id)).all()]
