"""The poll loop: find PR heads and base commits without a verdict, evaluate them, record, publish.

One pass (:meth:`Watcher.poll_once`) repeats until the queue is empty:

1. **discover**: open PRs into the base branch (conditional request: free when nothing changed) and
   the base branch head; queue new heads, drop queued commits whose PR closed, turned draft or moved
   to another head;
2. **finish** what an earlier pass or process left: record verdicts not yet in the ledger, publish
   results not yet on GitHub (a publish failure is retried here, never by evaluating again);
3. **evaluate** the next queued commit, after re-reading its PR (closed or force-pushed since the
   listing: dropped instead).

Every failure is logged as one line and leaves the queue consistent; the loop itself never dies of
a GitHub fault, a bad body or an evaluator crash.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any

from evalbot.errors import EvalbotError
from evalbot.github.client import GithubClient, GithubUnavailable
from evalbot.github.heads import PullHead
from evalbot.github.publisher import Publisher
from evalbot.github.sticky import Outcome
from evalbot.pipeline import Cancelled, Evaluator, Job, verdict_from_json, verdict_to_json
from evalbot.recorder import Recorder
from ledger.queue import Entry, JobQueue, State

log = logging.getLogger("evalbot.watch")

_MAX_FAILURE_BACKOFF_S = 900.0


@dataclass(frozen=True)
class WatchSettings:
    repo: str
    base_branch: str
    include_drafts: bool
    include_forks: bool
    max_attempts: int
    poll_interval_s: float


@dataclass
class PollReport:
    queued: int = 0
    dropped: int = 0
    evaluated: int = 0
    published: int = 0
    errors: int = 0
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.errors == 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _job_from(entry: Entry, baseline_sha: str | None) -> Job:
    return Job(**entry.job, baseline_sha=baseline_sha)


def _outcome(entry: Entry) -> Outcome:
    when = entry.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if entry.finished_at else ""
    if entry.verdict is None:
        error = entry.last_error or "unknown error"
        text = f"The evaluation could not run ({entry.attempts} attempts). Last error:\n\n    {error}\n"
        return Outcome(entry.sha, None, error, text, when)
    verdict = verdict_from_json(entry.verdict)
    return Outcome(entry.sha, verdict.label, verdict.summary(), verdict.markdown, when)


class Watcher:
    def __init__(
        self,
        settings: WatchSettings,
        client: GithubClient,
        queue: JobQueue,
        evaluator: Evaluator,
        recorder: Recorder,
        publisher: Publisher | None,  # None: --dry-run
    ) -> None:
        if settings.max_attempts < 1:
            raise EvalbotError("[github] max_attempts: must be at least 1")
        self.s = settings
        self.client = client
        self.queue = queue
        self.evaluator = evaluator
        self.recorder = recorder
        self.publisher = publisher
        self.stop = threading.Event()
        self.cancel = threading.Event()  # handed to the evaluator: abandon the current job

    def request_stop(self) -> None:
        """Stop after the current step; the running evaluation is asked to abandon."""
        self.stop.set()
        self.cancel.set()

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, once: bool = False) -> bool:
        """Poll until stopped (or once); returns whether the last pass had no errors."""
        for entry in self.queue.recover():
            log.warning("re-queued %s: the previous run stopped while evaluating it", entry.sha[:12])
        failures = 0
        while True:
            report = self.poll_once()
            log.info(
                "poll: %d queued, %d dropped, %d evaluated, %d published, %d errors",
                report.queued, report.dropped, report.evaluated, report.published, report.errors,
            )
            if once or self.stop.is_set():
                return report.ok
            failures = 0 if report.ok else failures + 1
            wait = self.s.poll_interval_s
            if failures:
                wait = min(wait, _MAX_FAILURE_BACKOFF_S, 30.0 * 2 ** (failures - 1))
            if report.retry_after_s is not None:
                wait = max(wait, report.retry_after_s)
            if self.stop.wait(wait):
                return report.ok

    def poll_once(self) -> PollReport:
        """Discover, then work through the queue; discover again only after something was evaluated.

        Discovery is not repeated between evaluations: publishing changes the PR listing (comments,
        labels), so re-listing after each one would cost O(N) requests per evaluation. A PR that
        closes or moves on while queued is caught by the re-read just before its evaluation; a new
        head pushed meanwhile is found by the discovery that follows the queue.
        """
        report = PollReport()
        while not self.stop.is_set():
            if not self._pause_for_rate_limit():
                break
            try:
                self._discover(report)
            except GithubUnavailable as exc:
                self._error(report, exc, exc.wait_s)
                break
            except EvalbotError as exc:
                self._error(report, exc)
                break
            evaluated_before = report.evaluated
            if not self._work_through_queue(report) or report.evaluated == evaluated_before:
                break
        return report

    def _work_through_queue(self, report: PollReport) -> bool:
        """Finish pending records/publishes, evaluate every queued entry; False: stop this pass."""
        while not self.stop.is_set():
            self._record_pending(report)
            self._publish_pending(report)
            entry = self.queue.next_queued()
            if entry is None:
                return True
            if not self._pause_for_rate_limit() or not self._evaluate(entry, report):
                return False
        return False

    def _error(self, report: PollReport, message: object, wait_s: float | None = None) -> None:
        report.errors += 1
        if wait_s is not None:
            report.retry_after_s = max(report.retry_after_s or 0.0, wait_s)
        log.error("%s", message)

    def _pause_for_rate_limit(self) -> bool:
        wait = self.client.rate_limit_wait()
        if wait <= 0:
            return True
        log.warning("GitHub rate limit: pausing %.0f s before the next request", wait)
        return not self.stop.wait(wait)

    # -- discover ----------------------------------------------------------------------------------

    def _eligible(self, pull: PullHead) -> str | None:
        """Why ``pull`` is not evaluated, or None when it is."""
        if pull.state != "open":
            return "closed"
        if pull.base_ref != self.s.base_branch:
            return f"retargeted to {pull.base_ref}"
        if pull.draft and not self.s.include_drafts:
            return "draft"
        if pull.is_fork and not self.s.include_forks:
            return "from a fork"
        return None

    def _job_fields(self, pull: PullHead) -> dict[str, Any]:
        job = Job(
            repo=self.s.repo, sha=pull.head_sha, clone_url=pull.clone_url, fetch_ref=pull.fetch_ref,
            author=pull.author, base_ref=pull.base_ref, base_sha=pull.base_sha, baseline_sha=None,
            pr_number=pull.number,
        )
        fields = asdict(job)
        del fields["baseline_sha"]  # chosen when the evaluation starts: the frontier may move meanwhile
        return fields

    def _discover(self, report: PollReport) -> None:
        pulls = {p.number: p for p in self.client.open_pulls(self.s.base_branch)}
        current: dict[int, PullHead] = {}
        for pull in pulls.values():
            if self._eligible(pull) is None:
                current[pull.number] = pull
                entry, created = self.queue.enqueue(
                    self.s.repo, f"pr/{pull.number}", pull.head_sha, self._job_fields(pull)
                )
                if created:
                    report.queued += 1
                    log.info("queued PR #%d @ %s by %s", pull.number, pull.head_sha[:12], pull.author)
        for entry in self.queue.active():
            if entry.state != State.QUEUED or not entry.target.startswith("pr/"):
                continue
            number = int(entry.target.removeprefix("pr/"))
            pull = current.get(number)
            if pull is None:
                why = self._eligible(pulls[number]) if number in pulls else "closed"
                self._drop(entry, f"PR #{number} {why}", report)
            elif pull.head_sha != entry.sha:
                self._drop(entry, f"superseded by {pull.head_sha[:12]} (force-push or new commit)", report)

        branch = self.client.branch(self.s.base_branch)
        base_job = Job(
            repo=self.s.repo, sha=branch.sha, clone_url=self.client.clone_url(),
            fetch_ref=f"refs/heads/{branch.name}", author=branch.author, base_ref=branch.name,
            base_sha=branch.sha, baseline_sha=None,
        )
        fields = asdict(base_job)
        del fields["baseline_sha"]
        _, created = self.queue.enqueue(self.s.repo, f"branch/{branch.name}", branch.sha, fields)
        if created:
            report.queued += 1
            log.info("queued %s @ %s by %s", branch.name, branch.sha[:12], branch.author)

    def _drop(self, entry: Entry, reason: str, report: PollReport) -> None:
        self.queue.drop(entry.id, reason)
        report.dropped += 1
        log.info("dropped %s %s: %s", entry.target, entry.sha[:12], reason)

    # -- evaluate ----------------------------------------------------------------------------------

    def _evaluate(self, entry: Entry, report: PollReport) -> bool:
        """Run one queued entry; False when the pass should stop (GitHub unreachable, shutdown)."""
        if entry.target.startswith("pr/"):
            number = int(entry.target.removeprefix("pr/"))
            try:
                pull = self.client.pull(number)
            except GithubUnavailable as exc:
                self._error(report, exc, exc.wait_s)
                return False
            except EvalbotError as exc:
                self._error(report, exc)
                self._drop(entry, f"cannot read PR #{number}", report)
                return True
            why = self._eligible(pull)
            if why is not None:
                self._drop(entry, f"PR #{number} {why}", report)
                return True
            if pull.head_sha != entry.sha:
                self._drop(entry, f"superseded by {pull.head_sha[:12]} (force-push or new commit)", report)
                return True

        try:
            frontier = self.recorder.frontier(self.s.repo, self.s.base_branch)
        except EvalbotError as exc:
            self._error(report, exc)
            return False
        baseline = frontier if frontier != entry.sha else None
        if baseline is None and entry.target.startswith("pr/"):
            baseline = entry.job["base_sha"]
        job = _job_from(entry, baseline)
        entry = self.queue.start(entry.id)
        log.info("evaluating %s (attempt %d, baseline %s)", job.describe(), entry.attempts,
                 baseline[:12] if baseline else "none")
        try:
            verdict = self.evaluator.evaluate(job, self.cancel)
        except Cancelled:
            self.queue.abandon(entry.id)
            log.warning("abandoned %s: shutting down; it will run again on the next start", job.describe())
            return False
        except Exception as exc:  # the evaluator's own failure, not a verdict: retried, bot stays up
            entry = self.queue.fail_attempt(entry.id, _one_line(exc), self.s.max_attempts)
            report.errors += 1
            log.error("evaluation of %s failed (attempt %d of %d): %s", job.describe(), entry.attempts,
                      self.s.max_attempts, _one_line(exc))
            return True
        try:
            record = {**verdict_to_json(verdict), "baseline_sha": baseline}
            json.dumps(record)  # a verdict the queue cannot store is the evaluator's failure
        except (TypeError, ValueError, AttributeError) as exc:
            self.queue.fail_attempt(entry.id, f"unusable verdict: {_one_line(exc)}", self.s.max_attempts)
            self._error(report, f"evaluation of {job.describe()} returned an unusable verdict: {exc}")
            return True
        self.queue.finish(entry.id, record)
        report.evaluated += 1
        log.info("verdict %s for %s: %s", verdict.label, job.describe(), verdict.summary())
        return True

    # -- record and publish ------------------------------------------------------------------------

    def _record_pending(self, report: PollReport) -> None:
        for entry in self.queue.unrecorded():
            assert entry.verdict is not None and entry.finished_at is not None
            job = _job_from(entry, entry.verdict.get("baseline_sha"))
            try:
                self.recorder.record(job, verdict_from_json(entry.verdict),
                                     entry.started_at or entry.finished_at, entry.finished_at)
            except EvalbotError as exc:
                self._error(report, exc)
                continue
            self.queue.mark_recorded(entry.id)

    def _publish_pending(self, report: PollReport) -> None:
        for entry in self.queue.unpublished():
            if self.stop.is_set():
                return
            try:
                self._publish(entry)
            except EvalbotError as exc:
                entry = self.queue.publish_failed(entry.id, str(exc))
                wait = exc.wait_s if isinstance(exc, GithubUnavailable) else None
                self._error(report, f"publishing {entry.target} {entry.sha[:12]} failed "
                            f"(attempt {entry.publish_attempts}; will retry): {exc}", wait)
                if isinstance(exc, GithubUnavailable):
                    return  # GitHub is unwell: the rest waits for the next pass
                continue
            self.queue.mark_published(entry.id)
            report.published += 1

    def _publish(self, entry: Entry) -> None:
        outcome = _outcome(entry)
        if self.publisher is None:
            log.info("dry run: would publish %s on %s @ %s", outcome.label or "error", entry.target,
                     entry.sha[:12])
            return
        if not entry.target.startswith("pr/"):
            self.publisher.status(outcome)
            return
        number = int(entry.target.removeprefix("pr/"))
        pull = self.client.pull(number)
        if pull.state != "open" or pull.head_sha != entry.sha:
            # The PR moved on: the commit gets its status; the comment and label belong to the new
            # head, whose publish lists this result in the history.
            self.publisher.status(outcome)
            log.info("published status %s @ %s (PR #%d has moved on)", outcome.label or "error",
                     entry.sha[:12], number)
            return
        earlier = [_outcome(e) for e in self.queue.history(entry.repo, entry.target) if e.id != entry.id]
        self.publisher.publish_pull(number, outcome, earlier, set_label=True)
        log.info("published %s on PR #%d @ %s", outcome.label or "error", number, entry.sha[:12])
