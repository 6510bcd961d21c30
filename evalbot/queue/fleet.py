"""The fleet: evaluations as procrastinate jobs on the validator's PostgreSQL.

Two things live in the fleet's database, side by side:

* **procrastinate's tables** (``procrastinate_jobs``, workers and their heartbeats): who runs what.
  One task, :data:`TASK` (``evaluate``), one procrastinate queue per GPU class
  (:func:`queue_name`), and a *queueing lock* on the job key, so a key has at most one job waiting
  whoever defers it and however often;
* **evalbot's tables** (:class:`FleetJob`, :class:`FleetHead`, :class:`FleetComment`, created here,
  not by the ledger's migrations: jobs are not ledger data): what a job is about and what became of
  it. A :class:`FleetJob` row per job key holds the verdict; a :class:`FleetHead` row says which
  target (``pr/7``, ``branch/main``) wants which key, and whether its verdict is in the ledger; a
  :class:`FleetComment` row per PR remembers the body its sticky comment was last set to.

The job key (:class:`JobKey`) is (repository, commit, frontier, policy SHA, basket, GPU class):
everything a verdict depends on. Claiming a job is a compare-and-set on its row (:meth:`FleetStore.claim`),
so a job deferred twice, or retried after its worker was presumed dead while it was in fact alive,
still produces one verdict: only the holder of the latest claim may store one.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from evalbot.errors import EvalbotError
from ledger.models import UTCDateTime

TASK = "evaluate"
# Base-branch commits move the frontier PRs are measured against: they go first.
BASE_PRIORITY = 10
PR_PRIORITY = 0


class FleetError(EvalbotError):
    pass


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for a worker (a procrastinate job is, or is about to be, ``todo``)
    RUNNING = "running"  # claimed by a worker
    DONE = "done"  # a verdict is stored
    FAILED = "failed"  # the validator's side failed max_attempts times: nothing is published
    CANCELLED = "cancelled"  # its PR was closed or force-pushed, or the frontier moved, before a verdict


class Base(DeclarativeBase):
    pass


class FleetJob(Base):
    __tablename__ = "fleet_jobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # JobKey.digest()
    repo: Mapped[str] = mapped_column(String(200))
    sha: Mapped[str] = mapped_column(String(40), index=True)
    frontier: Mapped[str | None] = mapped_column(String(40), nullable=True)
    policy: Mapped[str] = mapped_column(String(64))
    basket: Mapped[str] = mapped_column(String(120))
    gpu_class: Mapped[str] = mapped_column(String(120))
    job: Mapped[str] = mapped_column(Text)  # the Job's fields as JSON, without baseline_sha
    priority: Mapped[int] = mapped_column(Integer, default=PR_PRIORITY)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the current claim's token
    procrastinate_job: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gpu: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The commit status: about to be set (a kill may follow: the next try looks first), and set.
    status_tried_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FleetHead(Base):
    __tablename__ = "fleet_heads"
    __table_args__ = (UniqueConstraint("repo", "target", "sha", "gpu_class", "key", name="uq_fleet_heads"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repo: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(300))  # "pr/7" or "branch/main"
    sha: Mapped[str] = mapped_column(String(40))
    gpu_class: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(64), index=True)
    job: Mapped[str] = mapped_column(Text)  # this target's Job fields (its PR number, its fetch ref)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FleetComment(Base):
    __tablename__ = "fleet_comments"

    repo: Mapped[str] = mapped_column(String(200), primary_key=True)
    target: Mapped[str] = mapped_column(String(300), primary_key=True)
    head_sha: Mapped[str] = mapped_column(String(40))  # the head it showed
    body_sha: Mapped[str] = mapped_column(String(64))  # sha256 of the body the comment was set to
    final: Mapped[bool] = mapped_column(Boolean, default=False)  # a verdict (and its label), not a position
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    comment_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # GitHub's id of the comment


@dataclass(frozen=True)
class CommentState:
    head_sha: str
    body_sha: str
    final: bool
    updated_at: datetime
    comment_id: int | None = None


@dataclass(frozen=True)
class JobKey:
    """Everything a verdict depends on: one job, one verdict, per key."""

    repo: str
    sha: str
    frontier: str | None
    policy: str
    basket: str
    gpu_class: str

    def digest(self) -> str:
        fields = [self.repo, self.sha, self.frontier or "", self.policy, self.basket, self.gpu_class]
        return hashlib.sha256("\0".join(fields).encode()).hexdigest()


@dataclass(frozen=True)
class JobRow:
    key: str
    repo: str
    sha: str
    frontier: str | None
    gpu_class: str
    job: dict[str, Any]
    priority: int
    state: JobState
    attempts: int
    claim: str | None
    procrastinate_job: int | None
    worker: str | None
    gpu: str | None
    cancel_requested: bool
    verdict: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_at: datetime | None
    status_tried_at: datetime | None = None


@dataclass(frozen=True)
class HeadRow:
    id: int
    repo: str
    target: str
    sha: str
    gpu_class: str
    key: str
    job: dict[str, Any]
    active: bool
    recorded_at: datetime | None


@dataclass(frozen=True)
class Listed:
    """One job as ``evalbot queue`` shows it."""

    job: JobRow
    targets: tuple[str, ...]
    position: int | None  # 1 = next to run in its GPU class's queue; None unless waiting
    waiting: int  # jobs waiting in that queue


def _now() -> datetime:
    return datetime.now(UTC)


def stays(job: FleetJob | JobRow) -> bool:
    """A verdict no frontier move changes: a failure, or a REJECT (correctness does not depend on
    the frontier, and a faster frontier only widens a regression)."""
    if job.state == JobState.FAILED or not job.verdict:
        return True
    verdict = json.loads(job.verdict) if isinstance(job.verdict, str) else job.verdict
    return verdict.get("label") in (None, "REJECT")


def _job_row(r: FleetJob) -> JobRow:
    return JobRow(
        key=r.key, repo=r.repo, sha=r.sha, frontier=r.frontier, gpu_class=r.gpu_class, job=json.loads(r.job),
        priority=r.priority, state=JobState(r.state), attempts=r.attempts, claim=r.claim,
        procrastinate_job=r.procrastinate_job, worker=r.worker, gpu=r.gpu, cancel_requested=r.cancel_requested,
        verdict=json.loads(r.verdict) if r.verdict else None, error=r.error, created_at=r.created_at,
        started_at=r.started_at, finished_at=r.finished_at, status_at=r.status_at, status_tried_at=r.status_tried_at,
    )


def _head_row(r: FleetHead) -> HeadRow:
    return HeadRow(r.id, r.repo, r.target, r.sha, r.gpu_class, r.key, json.loads(r.job), r.active, r.recorded_at)


def queue_name(gpu_class: str) -> str:
    """The procrastinate queue of a GPU class (verdicts compare only within one)."""
    return "gpu-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", gpu_class).strip("-") or "default")


def sqlalchemy_url(url: str) -> str:
    """``[fleet] url`` as SQLAlchemy takes it (psycopg 3, which procrastinate uses too)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise FleetError(f"[fleet] url: not a database URL: {url!r}") from None
    if parsed.get_backend_name() != "postgresql":
        raise FleetError(f"[fleet] url: the fleet needs PostgreSQL (procrastinate), got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """``[fleet] url`` as libpq (procrastinate's psycopg connector) takes it."""
    return make_url(sqlalchemy_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(url: str) -> Any:
    """The procrastinate App on the fleet's database (the ``evaluate`` task is registered by workers;
    the poller defers it by name)."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(url)))


def ensure_schema(url: str, engine: Engine) -> None:
    """Create procrastinate's schema (when absent) and evalbot's fleet tables (when absent).

    Both are idempotent; an advisory lock keeps two processes starting at once from racing.
    """
    from procrastinate.schema import SchemaManager

    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(74015)"))
        present = conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()
        if not present:
            # Sent as is (no parameters: its "%" are not placeholders), in this transaction.
            conn.connection.driver_connection.execute(SchemaManager.get_schema())
        Base.metadata.create_all(conn)


class FleetStore:
    """evalbot's side of the fleet's database: jobs, the targets that want them, comments."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_engine(sqlalchemy_url(url), pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def setup(self) -> None:
        ensure_schema(self.url, self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- the poller's side -------------------------------------------------------------------------

    def submit(self, key: JobKey, target: str, fields: Mapping[str, Any], priority: int) -> tuple[JobRow, bool]:
        """Make ``target`` want the job of ``key``; returns (job, whether it has to be queued anew).

        A new key gets a queued row; a cancelled one is queued again (a PR reopened, made ready);
        a queued, running, done or failed one is left as it is (a commit is evaluated once).
        """
        digest = key.digest()
        now = _now()
        with self._session() as s:
            row = s.get(FleetJob, digest, with_for_update=True)
            fresh = False
            if row is None:
                s.execute(
                    text("INSERT INTO fleet_jobs (key, repo, sha, frontier, policy, basket, gpu_class, job, priority, "
                         "state, attempts, cancel_requested, created_at) VALUES (:key, :repo, :sha, :frontier, "
                         ":policy, :basket, :gpu_class, :job, :priority, 'queued', 0, false, :now) "
                         "ON CONFLICT (key) DO NOTHING"),
                    {"key": digest, "repo": key.repo, "sha": key.sha, "frontier": key.frontier, "policy": key.policy,
                     "basket": key.basket, "gpu_class": key.gpu_class, "job": json.dumps(dict(fields), sort_keys=True),
                     "priority": priority, "now": now},
                )
                row = s.get(FleetJob, digest, with_for_update=True, populate_existing=True)
                assert row is not None
                fresh = True
            elif row.state == JobState.CANCELLED:
                row.state, row.cancel_requested, row.claim, row.error = JobState.QUEUED, False, None, None
                fresh = True
            head = s.scalars(select(FleetHead).where(
                FleetHead.repo == key.repo, FleetHead.target == target, FleetHead.sha == key.sha,
                FleetHead.gpu_class == key.gpu_class, FleetHead.key == digest)).one_or_none()
            if head is None:
                s.add(FleetHead(repo=key.repo, target=target, sha=key.sha, gpu_class=key.gpu_class, key=digest,
                                job=json.dumps(dict(fields), sort_keys=True), active=True, created_at=now))
            elif not head.active:
                head.active = True
            return _job_row(row), fresh

    def active_heads(self, repo: str) -> list[HeadRow]:
        with self._session() as s:
            rows = s.scalars(select(FleetHead).where(FleetHead.repo == repo, FleetHead.active.is_(True))
                             .order_by(FleetHead.id)).all()
            return [_head_row(r) for r in rows]

    def heads_of(self, repo: str, target: str) -> list[HeadRow]:
        """Every head a target ever had, oldest first (the comment's history)."""
        with self._session() as s:
            rows = s.scalars(select(FleetHead).where(FleetHead.repo == repo, FleetHead.target == target)
                             .order_by(FleetHead.id)).all()
            return [_head_row(r) for r in rows]

    def reusable(self, repo: str, sha: str, gpu_class: str, policy: str, basket: str,
                 frontier: str | None, any_frontier: bool = True) -> JobRow | None:
        """A job whose verdict this commit can have without evaluating again: a done (or failed) one
        (against ``frontier`` unless ``any_frontier``, or a REJECT, which no frontier changes), else a
        queued or running one against ``frontier``. PR heads pass ``any_frontier=False``: their
        labels are paid against the live frontier; a base commit's verdict is history."""
        with self._session() as s:
            rows = s.scalars(select(FleetJob).where(
                FleetJob.repo == repo, FleetJob.sha == sha, FleetJob.gpu_class == gpu_class,
                FleetJob.policy == policy, FleetJob.basket == basket).order_by(FleetJob.created_at)).all()
            for state in (JobState.DONE, JobState.FAILED):
                for r in reversed(rows):  # the newest first
                    if r.state == state and (any_frontier or r.frontier == frontier or stays(r)):
                        return _job_row(r)
            for r in rows:
                if r.state in (JobState.QUEUED, JobState.RUNNING) and r.frontier == frontier:
                    return _job_row(r)
            return None

    def release(self, head_id: int, reason: str) -> JobRow | None:
        """A target no longer wants a head (closed, force-pushed, frontier moved). When no other
        active head wants its job, the job is cancelled: a queued one at once, a running one by
        asking its worker (which abandons the evaluation). Returns the job when it was cancelled."""
        with self._session() as s:
            head = s.get(FleetHead, head_id)
            if head is None or not head.active:
                return None
            head.active = False
            others = s.scalar(select(func.count()).select_from(FleetHead).where(
                FleetHead.key == head.key, FleetHead.active.is_(True), FleetHead.id != head.id))
            job = s.get(FleetJob, head.key, with_for_update=True)
            if others or job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
                return None
            if job.state == JobState.QUEUED:
                job.state, job.error, job.finished_at = JobState.CANCELLED, reason, _now()
            else:
                job.cancel_requested, job.error = True, reason
            return _job_row(job)

    def retry_failed(self, repo: str) -> list[JobRow]:
        """Failed jobs that an active head still wants get a fresh round of attempts (the poller
        does this once per start: after the validator fixed what failed, as in the embedded mode)."""
        with self._session() as s:
            rows = s.scalars(select(FleetJob).where(
                FleetJob.repo == repo, FleetJob.state == JobState.FAILED,
                select(FleetHead.id).where(FleetHead.key == FleetJob.key, FleetHead.active.is_(True)).exists(),
            ).with_for_update()).all()
            for row in rows:
                row.state, row.attempts, row.claim, row.finished_at = JobState.QUEUED, 0, None, None
            return [_job_row(r) for r in rows]

    def to_defer(self) -> list[JobRow]:
        """Queued jobs that no procrastinate job is waiting for or running: (re)defer them.

        That covers a poller killed between inserting a row and deferring it, and a job a worker
        handed back (shutdown, transient failure). A running row whose procrastinate job ended
        without finishing it (the task raised: the fleet's database went away mid-job) is queued
        again first, its attempt counted."""
        lonely = ("NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.queueing_lock = fleet_jobs.key "
                  "AND p.status IN ('todo', 'doing'))")
        with self._session() as s:
            for row in s.scalars(select(FleetJob).where(FleetJob.state == JobState.RUNNING).where(text(lonely))
                                 .with_for_update(skip_locked=True)).all():
                row.state, row.claim = JobState.QUEUED, None
                row.error = row.error or "its worker's job ended without a verdict"
        with self._session() as s:
            rows = s.scalars(
                select(FleetJob)
                .where(FleetJob.state == JobState.QUEUED)
                .where(text(lonely))
                .order_by(FleetJob.priority.desc(), FleetJob.created_at)
            ).all()
            return [_job_row(r) for r in rows]

    def job(self, key: str) -> JobRow | None:
        with self._session() as s:
            row = s.get(FleetJob, key)
            return _job_row(row) if row else None

    def jobs(self, keys: list[str]) -> dict[str, JobRow]:
        if not keys:
            return {}
        with self._session() as s:
            return {r.key: _job_row(r) for r in s.scalars(select(FleetJob).where(FleetJob.key.in_(keys))).all()}

    def unrecorded(self, repo: str) -> list[tuple[HeadRow, JobRow]]:
        """Heads whose job has a verdict not yet in the ledger for that head (in job order)."""
        with self._session() as s:
            rows = s.execute(
                select(FleetHead, FleetJob).join(FleetJob, FleetJob.key == FleetHead.key)
                .where(FleetHead.repo == repo, FleetHead.recorded_at.is_(None), FleetJob.state == JobState.DONE)
                .order_by(FleetJob.finished_at, FleetHead.id)
            ).all()
            return [(_head_row(h), _job_row(j)) for h, j in rows]

    def mark_recorded(self, head_id: int) -> None:
        with self._session() as s:
            head = s.get(FleetHead, head_id)
            if head is not None:
                head.recorded_at = _now()

    def mark_status_tried(self, key: str) -> None:
        with self._session() as s:
            row = s.get(FleetJob, key)
            if row is not None:
                row.status_tried_at = _now()

    def mark_status(self, key: str) -> None:
        with self._session() as s:
            row = s.get(FleetJob, key)
            if row is not None:
                row.status_at = _now()

    def comment(self, repo: str, target: str) -> CommentState | None:
        with self._session() as s:
            row = s.get(FleetComment, (repo, target))
            return CommentState(row.head_sha, row.body_sha, row.final, row.updated_at, row.comment_id) if row else None

    def set_comment(self, repo: str, target: str, state: CommentState) -> None:
        with self._session() as s:
            row = s.get(FleetComment, (repo, target))
            if row is None:
                row = FleetComment(repo=repo, target=target)
                s.add(row)
            row.head_sha, row.body_sha, row.final = state.head_sha, state.body_sha, state.final
            row.updated_at, row.comment_id = state.updated_at, state.comment_id

    def unstatused(self, repo: str) -> list[JobRow]:
        """Jobs with a verdict in the ledger (for at least one head) whose commit status is not set."""
        with self._session() as s:
            rows = s.scalars(
                select(FleetJob).where(FleetJob.repo == repo, FleetJob.state == JobState.DONE,
                                       FleetJob.status_at.is_(None))
                .where(select(FleetHead.id).where(FleetHead.key == FleetJob.key,
                                                  FleetHead.recorded_at.is_not(None)).exists())
                .order_by(FleetJob.finished_at)
            ).all()
            return [_job_row(r) for r in rows]

    def positions(self) -> dict[str, tuple[int, int]]:
        """Job key → (position, jobs waiting) in its GPU class's queue, in procrastinate's fetch
        order (priority first, then the order deferred)."""
        with self._session() as s:
            rows = s.execute(text(
                "SELECT queueing_lock, row_number() OVER w, count(*) OVER (PARTITION BY queue_name) "
                "FROM procrastinate_jobs WHERE status = 'todo' AND task_name = :task AND queueing_lock IS NOT NULL "
                "WINDOW w AS (PARTITION BY queue_name ORDER BY priority DESC, id)"), {"task": TASK}).all()
            return {lock: (int(pos), int(total)) for lock, pos, total in rows}

    def listing(self, include_finished: bool = False) -> list[Listed]:
        positions = self.positions()
        with self._session() as s:
            query = select(FleetJob).order_by(FleetJob.gpu_class, FleetJob.priority.desc(), FleetJob.created_at)
            if not include_finished:
                query = query.where(FleetJob.state.in_([JobState.QUEUED, JobState.RUNNING]))
            jobs = s.scalars(query).all()
            targets: dict[str, list[str]] = {}
            keys = [j.key for j in jobs]
            if keys:
                for head in s.scalars(select(FleetHead).where(FleetHead.key.in_(keys), FleetHead.active.is_(True))):
                    targets.setdefault(head.key, []).append(head.target)
            out = []
            for j in jobs:
                pos, total = positions.get(j.key, (None, 0))
                out.append(Listed(_job_row(j), tuple(targets.get(j.key, [])),
                                  pos if j.state == JobState.QUEUED else None, total))
            return out

    # -- the worker's side -------------------------------------------------------------------------

    def claim(self, key: str, procrastinate_job: int, worker: str, gpu: str, max_attempts: int) -> JobRow | None:
        """Take a job for evaluation; None when it is not this procrastinate job's to run.

        A compare-and-set: a queued row, or a running one whose claim came from the same
        procrastinate job (retried because its worker stopped sending heartbeats). Each claim gets a
        new token; only its holder may store the outcome (:meth:`finish`), so a worker presumed dead
        that comes back cannot store a second verdict. A job whose workers died ``max_attempts``
        times is failed instead of run again.
        """
        token = uuid.uuid4().hex
        with self._session() as s:
            row = s.get(FleetJob, key, with_for_update=True)
            if row is None:
                return None
            if row.cancel_requested:
                if row.state == JobState.RUNNING:  # its worker died before it saw the cancellation
                    row.state, row.finished_at, row.claim = JobState.CANCELLED, _now(), None
                return None
            ours = row.state == JobState.QUEUED or (
                row.state == JobState.RUNNING and row.procrastinate_job == procrastinate_job)
            if not ours:
                return None
            if row.attempts >= max_attempts:
                row.state, row.finished_at, row.claim = JobState.FAILED, _now(), None
                row.error = row.error or f"its worker stopped {row.attempts} times during the evaluation"
                return None
            row.state, row.claim, row.procrastinate_job = JobState.RUNNING, token, procrastinate_job
            row.worker, row.gpu, row.attempts, row.started_at = worker, gpu, row.attempts + 1, _now()
            return _job_row(row)

    def _own(self, s: Session, key: str, claim: str) -> FleetJob | None:
        row = s.get(FleetJob, key, with_for_update=True)
        if row is None or row.state != JobState.RUNNING or row.claim != claim:
            return None
        return row

    def finish(self, key: str, claim: str, verdict: Mapping[str, Any]) -> bool:
        """Store the verdict; False when the claim is no longer this one's, or the job was cancelled
        meanwhile (nothing is stored: a cancelled key's commit is evaluated under its new key)."""
        with self._session() as s:
            row = self._own(s, key, claim)
            if row is None:
                return False
            if row.cancel_requested:  # its PR moved on while the evaluation ended: no verdict for it
                row.state, row.finished_at, row.claim = JobState.CANCELLED, _now(), None
                return False
            row.state, row.verdict, row.finished_at = JobState.DONE, json.dumps(dict(verdict)), _now()
            row.claim, row.error = None, None
            return True

    def hand_back(self, key: str, claim: str, error: str | None, *, counts: bool, final: bool,
                  max_attempts: int) -> JobState | None:
        """An evaluation that did not reach a verdict: cancelled (its PR moved on), queued again
        (shutdown: the attempt does not count; a transient failure: it does), or failed (a fault
        that would repeat, or ``max_attempts`` spent). Returns the new state (None: not ours)."""
        with self._session() as s:
            row = self._own(s, key, claim)
            if row is None:
                return None
            row.claim = None
            if row.cancel_requested:
                row.state, row.finished_at = JobState.CANCELLED, _now()
            elif final or (counts and row.attempts >= max_attempts):
                row.state, row.finished_at, row.error = JobState.FAILED, _now(), error
            else:
                row.state = JobState.QUEUED
                row.error = error
                if not counts:
                    row.attempts = max(row.attempts - 1, 0)
            return JobState(row.state)

    def cancel_requested(self, key: str, claim: str) -> bool:
        """Whether the running claim should stop: cancelled by the poller, or no longer ours."""
        with self._session() as s:
            row = s.get(FleetJob, key)
            return row is None or row.cancel_requested or row.claim != claim
