"""``evalbot watch`` in fleet mode: the poller enqueues, workers evaluate, the poller publishes.

One pass (:meth:`FleetWatcher.poll_once`):

1. **discover** open PRs and the base branch head, as the embedded poller does; for each head and
   each GPU class, submit the job of its key (repository, commit, frontier, policy SHA, basket, GPU
   class). A commit with a verdict already (another PR, the base branch) is not evaluated again.
   Heads that left (PR closed, force-pushed, turned draft) release their job: a queued one is
   cancelled, a running one is asked to stop (its worker abandons the evaluation); a PR head still
   queued when the frontier moves is queued again against the new frontier;
2. **defer** every queued job that no procrastinate job waits for (a new one, or one a worker handed
   back), under its queueing lock;
3. **record** the verdicts workers stored in the ledger (idempotent: the recorder finds a commit's
   row before appending one), then **publish**: the commit status of each recorded verdict, and
   each PR's sticky comment: a queued head's shows its queue position in each GPU class (refreshed
   at most every ``[fleet] position_refresh_s``), a finished head's its verdict and label.

Nothing here is lost to a kill: every step is re-derived from the database on the next pass, and
every GitHub write converges (the comment is found by its marker, labels are diffed, a status for
the same context replaces the last one), so one verdict, one comment, one label per head.
Infrastructure failures stay off the PR and the ledger, as in the embedded poller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from evalbot import ranking
from evalbot.config import Config
from evalbot.errors import EvalbotError
from evalbot.github.client import GithubClient, GithubUnavailable
from evalbot.github.publisher import Publisher
from evalbot.github.sticky import Outcome, render, render_pending
from evalbot.ledger_recorder import DryRunRecorder
from evalbot.pipeline import Job, verdict_from_json
from evalbot.queue.dispatch import Dispatcher
from evalbot.queue.fleet import (
    BASE_PRIORITY,
    PR_PRIORITY,
    CommentState,
    FleetStore,
    HeadRow,
    JobKey,
    JobRow,
    JobState,
    stays,
)
from evalbot.recorder import Recorder
from evalbot.watch import _MAX_FAILURE_BACKOFF_S, PollReport, Watcher, WatchSettings
from ledger.errors import LedgerError

log = logging.getLogger("evalbot.watch")


@dataclass(frozen=True)
class FleetSettings:
    gpu_classes: tuple[str, ...]  # the first one's verdict sets the label
    policy: str  # the policy's SHA-256 (part of every job key)
    basket: str
    position_refresh_s: float = 300.0
    check_interval_s: float = 5.0  # between GitHub polls: record and publish what workers finished


@dataclass
class _Want:
    sha: str
    fields: dict[str, Any]
    priority: int
    number: int | None = None


@dataclass
class _Shown:
    signature: tuple[Any, ...] | None = None
    comment: CommentState | None = None
    loaded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _outcome(job: JobRow) -> Outcome:
    assert job.verdict is not None
    when = job.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if job.finished_at else ""
    verdict = verdict_from_json(job.verdict)
    return Outcome(job.sha, verdict.label, verdict.summary(), verdict.markdown, when)


def _combined(sha: str, done: list[tuple[str, JobRow]]) -> Outcome:
    """One GPU class: its outcome as is. Several: the first class's label, every class's verdict."""
    outcomes = [(cls, _outcome(job)) for cls, job in done]
    if len(outcomes) == 1:
        return outcomes[0][1]
    first = outcomes[0][1]
    markdown = "\n\n".join(f"#### GPU class {cls}\n\n{o.markdown.strip()}" for cls, o in outcomes)
    summary = "; ".join(f"{cls}: {o.label}" for cls, o in outcomes)
    return Outcome(sha, first.label, summary, markdown, first.when)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


class FleetWatcher(Watcher):
    def __init__(
        self,
        settings: WatchSettings,
        fleet: FleetSettings,
        client: GithubClient,
        store: FleetStore,
        dispatcher: Dispatcher,
        recorders: Mapping[str, Recorder],
        publishers: Mapping[str, Publisher] | None,  # per GPU class (their status contexts); None: dry run
    ) -> None:
        primary = fleet.gpu_classes[0]
        super().__init__(settings, client, queue=None, evaluator=None, recorder=recorders[primary],  # type: ignore[arg-type]
                         publisher=publishers[primary] if publishers else None)
        self.f = fleet
        self.store = store
        self.dispatcher = dispatcher
        self.recorders = dict(recorders)
        self.publishers = dict(publishers) if publishers else None
        self._wanted: dict[str, _Want] = {}
        self._shown: dict[str, _Shown] = {}

    def close(self) -> None:
        self.dispatcher.close()
        self.store.dispose()

    def _recover(self) -> None:
        """A dead worker's job is retried by the fleet (stalled-job recovery); what failed before
        this start gets one fresh round of attempts, as in the embedded mode."""
        try:
            for job in self.store.retry_failed(self.s.repo):
                log.info("re-queued %s for %s: its evaluation failed before this start (%s)", job.sha[:12],
                         job.gpu_class, job.error or "unknown error")
        except SQLAlchemyError as exc:
            log.error("re-queueing failed jobs: %s", exc)

    def run(self, once: bool = False) -> bool:
        self._recover()
        failures = 0
        while True:
            report = self.poll_once()
            log.info("poll: %d queued, %d cancelled, %d recorded, %d published, %d errors", report.queued,
                     report.dropped, report.evaluated, report.published, report.errors)
            if once or self.stop.is_set():
                return report.ok
            failures = 0 if report.ok else failures + 1
            wait = self.s.poll_interval_s
            if failures:
                wait = min(wait, 900.0, 30.0 * 2 ** (failures - 1))
            if report.retry_after_s is not None:
                wait = max(wait, report.retry_after_s)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if self.stop.wait(min(self.f.check_interval_s, left)):
                    return report.ok
                if deadline - time.monotonic() > 0:
                    self.collect()

    def poll_once(self) -> PollReport:
        report = PollReport()
        if not self._pause_for_rate_limit():
            return report
        try:
            self._discover_fleet(report)
        except GithubUnavailable as exc:
            self._error(report, exc, exc.wait_s)
            return report
        except (EvalbotError, LedgerError, SQLAlchemyError) as exc:
            self._error(report, exc)
            return report
        self._collect(report)
        return report

    def collect(self) -> PollReport:
        """Between polls: defer, record and publish what changed (no listing of PRs)."""
        report = PollReport()
        self._collect(report)
        if not report.ok:
            log.info("collect: %d errors", report.errors)
        return report

    def _collect(self, report: PollReport) -> None:
        try:
            self._defer(report)
            self._record(report)
            if self.stop.is_set():
                return
            self._publish(report)
        except GithubUnavailable as exc:
            self._error(report, exc, exc.wait_s)
        except (EvalbotError, LedgerError, SQLAlchemyError) as exc:
            self._error(report, exc)

    # -- discover ----------------------------------------------------------------------------------

    def _baseline(self, want: _Want, frontier: str | None) -> str | None:
        baseline = frontier if frontier != want.sha else None
        if baseline is None and want.number is not None:
            baseline = want.fields["base_sha"]
        return baseline

    def _discover_fleet(self, report: PollReport) -> None:
        repo = self.s.repo
        pulls = {p.number: p for p in self.client.open_pulls(self.s.base_branch)}
        wanted: dict[str, _Want] = {}
        for pull in sorted(pulls.values(), key=lambda p: p.number):  # queued in the order opened
            if self._eligible(pull) is None:
                wanted[f"pr/{pull.number}"] = _Want(pull.head_sha, self._job_fields(pull), PR_PRIORITY, pull.number)
        branch = self.client.branch(self.s.base_branch)
        base = Job(repo=repo, sha=branch.sha, clone_url=self.client.clone_url(),
                   fetch_ref=f"refs/heads/{branch.name}", author=branch.author, base_ref=branch.name,
                   base_sha=branch.sha, baseline_sha=None)
        fields = asdict(base)
        del fields["baseline_sha"]
        wanted[f"branch/{branch.name}"] = _Want(branch.sha, fields, BASE_PRIORITY)
        self._wanted = wanted
        frontiers = {cls: self.recorders[cls].frontier(repo, self.s.base_branch) for cls in self.f.gpu_classes}

        heads = self.store.active_heads(repo)
        jobs = self.store.jobs([h.key for h in heads])
        kept: set[tuple[str, str, str]] = set()
        for head in heads:
            want = wanted.get(head.target)
            job = jobs.get(head.key)
            reason = None
            if head.target.startswith("branch/") and (want is None or want.sha != head.sha):
                # An older base commit is still evaluated (frontier history); only PR heads leave.
                kept.add((head.target, head.sha, head.gpu_class))
                continue
            if want is None:
                number = int(head.target.removeprefix("pr/"))
                why = self._eligible(pulls[number]) if number in pulls else "closed"
                reason = f"PR #{number} {why}"
            elif want.sha != head.sha:
                reason = f"superseded by {want.sha[:12]} (force-push or new commit)"
            elif job is not None and job.state == JobState.CANCELLED:
                reason = "cancelled earlier"
            elif (job is not None and job.state == JobState.QUEUED
                  and job.frontier != self._baseline(want, frontiers.get(head.gpu_class))):
                reason = "the frontier moved: queued again against the new one"
            elif (job is not None and job.state == JobState.DONE and head.target.startswith("pr/")
                  and not stays(job) and want.sha != frontiers.get(head.gpu_class)
                  and job.frontier != self._baseline(want, frontiers.get(head.gpu_class))):
                reason = "the frontier moved: measured again against the new one"
            if reason is None:
                kept.add((head.target, head.sha, head.gpu_class))
                continue
            cancelled = self.store.release(head.id, reason)
            if cancelled is not None:
                if cancelled.state == JobState.CANCELLED:
                    self.dispatcher.cancel_waiting(cancelled.key)
                report.dropped += 1
                log.info("cancelled %s %s (%s)%s: %s", head.target, head.sha[:12], head.gpu_class,
                         " — its worker is asked to stop" if cancelled.state == JobState.RUNNING else "", reason)

        for target, want in wanted.items():
            for cls in self.f.gpu_classes:
                if (target, want.sha, cls) in kept:
                    continue
                baseline = self._baseline(want, frontiers.get(cls))
                reuse = self.store.reusable(repo, want.sha, cls, self.f.policy, self.f.basket, baseline,
                                            any_frontier=not target.startswith("pr/"))
                key = JobKey(repo, want.sha, reuse.frontier if reuse else baseline, self.f.policy, self.f.basket, cls)
                job, fresh = self.store.submit(key, target, want.fields, want.priority)
                if fresh:
                    report.queued += 1
                    log.info("queued %s @ %s for %s (baseline %s)", target, want.sha[:12], cls,
                             key.frontier[:12] if key.frontier else "none")
        self._write_merge_queue_fleet(frontiers.get(self.f.gpu_classes[0]), report)

    def _write_merge_queue_fleet(self, live: str | None, report: PollReport) -> None:
        """The embedded poller's merge queue, from the first GPU class's finished PR jobs (its verdict
        sets the label), for ``evalbot frontier queue``."""
        if self.s.data_dir is None or self.publisher is None:
            return
        primary = self.f.gpu_classes[0]
        heads = [h for h in self.store.active_heads(self.s.repo)
                 if h.gpu_class == primary and h.target.startswith("pr/")]
        jobs = self.store.jobs([h.key for h in heads])
        found: list[ranking.Candidate | None] = []
        for head in heads:
            job = jobs.get(head.key)
            if job is not None and job.state == JobState.DONE and job.verdict is not None:
                found.append(ranking.candidate(int(head.target.removeprefix("pr/")), head.sha,
                                               str(head.job.get("author", "")), job.verdict, live))
        self._write_ranked(found, live, report)

    # -- defer, record -----------------------------------------------------------------------------

    def _defer(self, report: PollReport) -> None:
        for job in self.store.to_defer():
            if self.stop.is_set():
                return
            # A transient failure handed back by a worker: retried after a growing delay.
            delay = 0.0
            if job.error and job.attempts > 0:
                delay = min(self.s.retry_backoff_s * 2 ** (job.attempts - 1), _MAX_FAILURE_BACKOFF_S)
            self.dispatcher.defer(job, delay)

    def _record(self, report: PollReport) -> None:
        for head, job in self.store.unrecorded(self.s.repo):
            assert job.verdict is not None and job.finished_at is not None
            started = job.started_at or job.finished_at
            recorder = self.recorders.get(job.gpu_class)
            if recorder is None:
                continue  # a class no longer configured: its verdicts wait
            target_job = Job(**head.job, baseline_sha=job.verdict.get("baseline_sha", job.frontier))
            try:
                recorder.record(target_job, verdict_from_json(job.verdict), started, job.finished_at)
            except EvalbotError as exc:
                self._error(report, exc)
                continue
            self.store.mark_recorded(head.id)
            report.evaluated += 1

    # -- publish -----------------------------------------------------------------------------------

    def _status_publisher(self, gpu_class: str) -> Publisher | None:
        return self.publishers.get(gpu_class) if self.publishers else None

    def _publish(self, report: PollReport) -> None:
        for job in self.store.unstatused(self.s.repo):
            if self.stop.is_set():
                return
            publisher = self._status_publisher(job.gpu_class)
            if publisher is not None:
                # Noted before it is set: a try that a kill may have cut short first looks at the
                # commit's statuses, so the commit gets one whatever happened.
                if job.status_tried_at is None:
                    self.store.mark_status_tried(job.key)
                publisher.status(_outcome(job), unless_set=job.status_tried_at is not None)
            self.store.mark_status(job.key)
        heads = [h for h in self.store.active_heads(self.s.repo) if h.target.startswith("pr/")]
        jobs = self.store.jobs([h.key for h in heads])
        positions = self.store.positions()
        by_target: dict[str, dict[str, HeadRow]] = {}
        for head in heads:
            want = self._wanted.get(head.target)
            if want is not None and want.sha == head.sha:
                by_target.setdefault(head.target, {})[head.gpu_class] = head
        for target, classes in by_target.items():
            if self.stop.is_set():
                return
            self._publish_pull(target, classes, jobs, positions, report)

    def _publish_pull(self, target: str, classes: dict[str, HeadRow], jobs: Mapping[str, JobRow],
                      positions: Mapping[str, tuple[int, int]], report: PollReport) -> None:
        want = self._wanted[target]
        number = want.number
        assert number is not None
        rows: list[tuple[str, JobRow | None, HeadRow | None]] = []
        for cls in self.f.gpu_classes:
            head = classes.get(cls)
            rows.append((cls, jobs.get(head.key) if head else None, head))
        done = [(cls, job) for cls, job, head in rows
                if job is not None and job.state == JobState.DONE and head is not None and head.recorded_at]
        final = bool(done) and all(
            job is not None and (job.state == JobState.FAILED or (cls, job) in done) for cls, job, _ in rows)
        signature = (want.sha, final, tuple((cls, job.state if job else None, positions.get(job.key) if job else None,
                                             bool(head and head.recorded_at)) for cls, job, head in rows))
        shown = self._shown.setdefault(target, _Shown())
        if shown.signature == signature:
            return
        if not shown.loaded:
            shown.comment, shown.loaded = self.store.comment(self.s.repo, target), True
        previous = shown.comment
        now = datetime.now(UTC)
        if not final and previous is not None and previous.head_sha == want.sha and not previous.final:
            age = (now - previous.updated_at).total_seconds()
            if age < self.f.position_refresh_s:
                return  # positions change with every verdict; the comment follows at most this often
        earlier = self._earlier(target, want.sha)
        if final:
            outcome = self._with_checkpoint(_combined(want.sha, done), self.recorders.get(done[0][0]))
            body = render(outcome, earlier)
        else:
            lines = [self._line(cls, job, positions, bool(head and head.recorded_at)) for cls, job, head in rows]
            body = render_pending(want.sha, lines, earlier)
        state = CommentState(want.sha, _digest(body), final, now)
        if previous is not None and previous.body_sha == state.body_sha:
            shown.signature = signature
            return
        if self.publisher is None:
            log.info("dry run: would set the comment of PR #%d to %s", number,
                     "its verdict" if final else "its queue position")
        else:
            comment_id = self.publisher.set_sticky(number, body, previous.comment_id if previous else None)
            state = dataclasses.replace(state, comment_id=comment_id)
            if final:
                self.publisher.labels(number, outcome.label)
        self.store.set_comment(self.s.repo, target, state)
        shown.signature, shown.comment = signature, state
        if final:
            report.published += 1
            log.info("published %s on PR #%d @ %s", outcome.label, number, want.sha[:12])

    def _line(self, cls: str, job: JobRow | None, positions: Mapping[str, tuple[int, int]], recorded: bool) -> str:
        if job is None:
            return f"{cls}: waiting to be queued"
        if job.state == JobState.QUEUED:
            pos = positions.get(job.key)
            where = f"position {pos[0]} of {pos[1]}" if pos else "being queued"
            return f"{cls}: queued, {where}"
        if job.state == JobState.RUNNING:
            since = job.started_at.astimezone(UTC).strftime("%H:%M UTC") if job.started_at else "now"
            return f"{cls}: running since {since}"
        if job.state == JobState.DONE:  # its label is shown once it is in the ledger
            return f"{cls}: done ({(job.verdict or {}).get('label', '?')})" if recorded else f"{cls}: finished"
        return f"{cls}: not evaluated on this validator"

    def _earlier(self, target: str, sha: str) -> list[Outcome]:
        """Earlier heads of the PR with a verdict in the first GPU class that has one, newest first."""
        heads = [h for h in self.store.heads_of(self.s.repo, target) if h.sha != sha and h.recorded_at]
        jobs = self.store.jobs([h.key for h in heads])
        seen: set[str] = set()
        out = []
        for head in reversed(heads):
            job = jobs.get(head.key)
            if head.sha in seen or job is None or job.state != JobState.DONE:
                continue
            seen.add(head.sha)
            out.append(_outcome(job))
        return out


def open_fleet_watcher(cfg: Config, settings: WatchSettings, client: GithubClient,
                       dry_run: bool = False) -> FleetWatcher:
    """The fleet poller of ``cfg``: its store (schema created when absent), recorders per GPU class."""
    from evalbot.ledger_recorder import LedgerRecorder, basket_id, open_recorder

    if not cfg.fleet.gpu_classes and not cfg.ledger.gpu_class:
        raise EvalbotError(f"{cfg.source}: [ledger] gpu_class is not set: the fleet queues each job for a GPU "
                           "class (or list them in [fleet] gpu_classes)")
    classes = tuple(cfg.gpu_classes)
    cfg = dataclasses.replace(cfg, ledger=dataclasses.replace(cfg.ledger, gpu_class=classes[0]))
    recorder, _ = open_recorder(cfg, read_only=dry_run)
    basket = basket_id(cfg)
    recorders: dict[str, Recorder] = {classes[0]: recorder}
    for cls in classes[1:]:
        if isinstance(recorder, LedgerRecorder):
            recorders[cls] = LedgerRecorder(recorder.ledger, basket, cls)
        else:
            recorders[cls] = DryRunRecorder(getattr(recorder, "ledger", None), basket, cls)
    store = FleetStore(cfg.fleet.url)
    try:
        store.setup()
    except SQLAlchemyError as exc:
        store.dispose()
        raise EvalbotError(f"{cfg.source}: [fleet] url: cannot use the fleet's database: {_first_line(exc)}") from None
    publishers = None
    if not dry_run:
        context = cfg.github.status_context
        publishers = {cls: Publisher(client, context if len(classes) == 1 else f"{context}/{cls}") for cls in classes}
    fleet = FleetSettings(gpu_classes=classes, policy=policy_sha(cfg), basket=basket,
                          position_refresh_s=cfg.fleet.position_refresh_s, check_interval_s=cfg.fleet.check_interval_s)
    return FleetWatcher(settings, fleet, client, store, Dispatcher(store), recorders, publishers)


def policy_sha(cfg: Config) -> str:
    """The SHA-256 of the policy the evaluator applies (the shipped policy of the basket set)."""
    from evalbot.policy import policy_bytes

    return hashlib.sha256(policy_bytes(basket_set=cfg.basket.set)[0]).hexdigest()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
