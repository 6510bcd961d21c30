"""The poll loop: find PR heads and base commits without a verdict, evaluate them, record, publish.

One pass (:meth:`Watcher.poll_once`) repeats until the queue is empty:

1. **discover**: open PRs into the base branch (conditional request: free when nothing changed) and
   the base branch head; queue new heads, drop queued commits whose PR closed, turned draft or moved
   to another head;
   A head that already has a result is not evaluated again: a failed one is re-queued only by the
   first discovery of a process (a restart, after the validator fixed what failed); one whose PR
   shows another commit's result (A1 → A2 → A1) is published again from the stored result;
2. **finish** what an earlier pass or process left: record results (verdicts and failures) not yet
   in the ledger, publish results not yet on GitHub (a publish failure is retried here, never by
   evaluating again);
3. **evaluate** the next queued commit, after re-reading its PR (closed or force-pushed since the
   listing: dropped instead).

Every failure is logged as one line and leaves the queue consistent; the loop itself never dies of
a GitHub fault, a bad body, an evaluator crash or a ledger locked by another writer (that pass stops
and the next one retries). An evaluator's exception is classified (:mod:`evalbot.faults`): the
contributor's fault is a final ``REJECT`` verdict, recorded and published like any other; an
infrastructure fault is the validator's problem and stays in the queue and the log, never in the
public ledger or on the PR: a transient one is retried after a growing delay, a deterministic one
only after a restart. An error reaches the PR and the ledger only through :func:`clean_error`: one
line, bounded, with tokens and secret paths redacted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from evalbot import ranking
from evalbot.config import Config
from evalbot.errors import EvalbotError
from evalbot.faults import Fault, classify
from evalbot.github.client import GithubClient, GithubUnavailable
from evalbot.github.heads import PullHead
from evalbot.github.publisher import Publisher
from evalbot.github.sticky import Outcome, render_pending
from evalbot.pipeline import Cancelled, Evaluator, Job, Verdict, verdict_from_json, verdict_to_json
from evalbot.queue.store import Entry, JobQueue, State
from evalbot.quote import block
from evalbot.recorder import Recorder
from ledger.dberrors import LedgerBusy
from ledger.errors import LedgerError

log = logging.getLogger("evalbot.watch")

_MAX_FAILURE_BACKOFF_S = 900.0
# A REJECT for the contributor's input ran no GPU work and applied no policy.
NOT_RUN = "n/a"
_T = TypeVar("_T")
# What of an evaluator's error is kept (queue, ledger, PR comment, commit status): one line, this long.
ERROR_MAX_CHARS = 300
_REDACTED = "[redacted]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # GitHub tokens (classic, fine-grained, app, OAuth, refresh)
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,})"), _REDACTED),
    # credentials in a URL: https://user:token@host/…
    (re.compile(r"(?<=://)[^/\s@]+@"), _REDACTED + "@"),
    # Authorization headers and key=value / key: value secrets (values that look like keys)
    (re.compile(r"(?i)(?<![a-z])(?:bearer|token)\s+(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{16,}"), _REDACTED),
    (re.compile(r"(?i)(?<![a-z])(?:password|passwd|secret|token|api[_-]?key|private[_-]?key)\s*[=:]\s*"
                r"[A-Za-z0-9._~+/=-]{8,}"), _REDACTED),
    # PEM blocks, and paths of files that hold keys or tokens
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*", re.S), _REDACTED),
    (re.compile(r"(?:~|\.{0,2}/)[^\s'\"`:]*?(?:\.pem|\.key\b|id_rsa|id_ed25519|id_ecdsa|token|secret|credential"
                r"|holdout_seed)[^\s'\"`:]*", re.I), "[secret path]"),
)


def clean_error(text: str, secrets: Iterable[str] = ()) -> str:
    """An error as it may be shown in public: one line, at most ``ERROR_MAX_CHARS``, no secrets.

    ``secrets`` are literal strings to remove (the token, the paths of the token file, the signing
    key and the holdout seed, the seed itself); token-like strings, credentials in URLs and paths that
    look like keys or tokens are redacted too.
    """
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    if len(text) > ERROR_MAX_CHARS:
        text = text[: ERROR_MAX_CHARS - 1] + "…"
    return text


def secrets_of(cfg: Config, token: str) -> tuple[str, ...]:
    """The literal secrets of a validator's config that must never reach a PR or the ledger."""
    found = [token]
    paths = [cfg.github.token_file, cfg.ledger.signing_key, str(cfg.data_dir / "holdout_seed")]
    for raw in filter(None, paths):
        path = Path(raw).expanduser()
        # Relative spellings only with a separator: a bare "token" would blank out the word everywhere.
        found += [p for p in (raw, str(path)) if "/" in p]
        try:
            found.append(str(path.resolve()))
        except OSError:
            pass
    seed = os.environ.get(cfg.basket.holdout_seed_env, "").strip()
    try:
        seed = seed or (cfg.data_dir / "holdout_seed").read_text().strip()
    except OSError:
        pass
    if seed:
        found.append(seed)
    return tuple(s for s in found if s)


@dataclass(frozen=True)
class WatchSettings:
    repo: str
    base_branch: str
    include_drafts: bool
    include_forks: bool
    max_attempts: int
    poll_interval_s: float
    secrets: tuple[str, ...] = ()  # redacted from evaluator errors (see :func:`secrets_of`)
    retry_backoff_s: float = 60.0  # before the 2nd attempt after a transient failure; doubles per attempt
    data_dir: Path | None = None  # where the merge queue is written (evalbot.ranking); None: nowhere


@dataclass
class PollReport:
    queued: int = 0
    dropped: int = 0
    evaluated: int = 0
    failed: int = 0  # commits given up on until a restart (infrastructure faults: logged, not published)
    published: int = 0
    errors: int = 0
    waiting: int = 0  # queued commits waiting out a retry delay
    retry_after_s: float | None = None
    next_retry_s: float | None = None  # when the first of those is due

    @property
    def ok(self) -> bool:
        return self.errors == 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _job_from(entry: Entry, baseline_sha: str | None) -> Job:
    return Job(**{k: v for k, v in entry.job.items() if k != "previous"}, baseline_sha=baseline_sha)


def _superseded(entry: Entry) -> list[Outcome]:
    """The head's own earlier verdicts (against an older frontier or policy), newest first."""
    out = []
    for old in entry.job.get("previous", []):
        verdict = verdict_from_json(old["verdict"])
        when = datetime.fromisoformat(old["finished_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") \
            if old.get("finished_at") else ""
        front = old["verdict"].get("baseline_sha") or "none"
        out.append(Outcome(entry.sha, verdict.label, f"against frontier {front[:12]}: {verdict.summary()}",
                           verdict.markdown, when))
    return out


def reject_for_input(job: Job, reason: str) -> Verdict:
    """The verdict on a commit whose own content cannot be evaluated (``reason``: one clean line)."""
    markdown = ("**REJECT**: this commit cannot be evaluated as submitted (nothing was built or run).\n\n"
                f"{block(reason)}\n")  # the reason quotes contributor text (file and slot names)
    return Verdict(label="REJECT", reasons=(reason,), markdown=markdown, gpu=NOT_RUN, policy_hash=NOT_RUN,
                   document={"outcome": "rejected", "fault": Fault.CONTRIBUTOR.value, "commit": job.sha,
                             "reasons": [reason]})


def _outcome(entry: Entry) -> Outcome:
    when = entry.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if entry.finished_at else ""
    assert entry.verdict is not None, "only verdicts are published"
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
        # Failed rows left by earlier processes: each is retried once, when discovery finds it a head.
        self._retry_ids: set[int] | None = None
        self._started = datetime.now(UTC)  # failures reached since then are not retried by this process
        # Commits whose last attempt failed transiently: not evaluated (for any target) before this
        # monotonic time.
        self._not_before: dict[str, float] = {}

    def request_stop(self) -> None:
        """Stop after the current step; the running evaluation is asked to abandon."""
        self.stop.set()
        self.cancel.set()

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, once: bool = False) -> bool:
        """Poll until stopped (or once); returns whether the last pass had no errors."""
        self._recover()
        failures = 0
        while True:
            report = self.poll_once()
            log.info(
                "poll: %d queued, %d dropped, %d evaluated, %d failed, %d published, %d errors%s",
                report.queued, report.dropped, report.evaluated, report.failed, report.published, report.errors,
                f", {report.waiting} waiting to retry" if report.waiting else "",
            )
            if once or self.stop.is_set():
                return report.ok
            failures = 0 if report.ok else failures + 1
            wait = self.s.poll_interval_s
            if failures:
                wait = min(wait, _MAX_FAILURE_BACKOFF_S, 30.0 * 2 ** (failures - 1))
            if report.next_retry_s is not None:
                wait = min(wait, max(report.next_retry_s, 0.0))
            if report.retry_after_s is not None:
                wait = max(wait, report.retry_after_s)
            if self.stop.wait(wait):
                return report.ok

    def _recover(self) -> None:
        for entry in self._persist("re-queueing what the previous run left running", self.queue.recover) or []:
            log.warning("re-queued %s: the previous run stopped while evaluating it", entry.sha[:12])

    def poll_once(self) -> PollReport:
        """Discover, then work through the queue; discover again only after something was evaluated
        (or given up on: either way time passed, and a new head may have been pushed).

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
                if self._retry_ids is None:
                    self._retry_ids = self.queue.failed_ids()
                self._discover(report)
            except GithubUnavailable as exc:
                self._error(report, exc, exc.wait_s)
                break
            except EvalbotError as exc:
                self._error(report, exc)
                break
            except LedgerError as exc:
                self._ledger_error(report, exc)
                break
            ran_before = report.evaluated + report.failed
            try:
                worked = self._work_through_queue(report)
            except LedgerError as exc:
                self._ledger_error(report, exc)
                break
            if not worked or report.evaluated + report.failed == ran_before:
                break
        return report

    def _work_through_queue(self, report: PollReport) -> bool:
        """Finish pending records/publishes, evaluate every queued entry; False: stop this pass."""
        while not self.stop.is_set():
            self._record_pending(report)
            self._publish_pending(report)
            now = time.monotonic()
            waiting = {sha: t - now for sha, t in self._not_before.items() if t > now}
            entry = self.queue.next_queued(exclude_shas=waiting)
            if entry is None:
                if waiting:
                    report.waiting, report.next_retry_s = len(waiting), min(waiting.values())
                return True
            if not self._pause_for_rate_limit() or not self._evaluate(entry, report):
                return False
        return False

    def _error(self, report: PollReport, message: object, wait_s: float | None = None) -> None:
        report.errors += 1
        if wait_s is not None:
            report.retry_after_s = max(report.retry_after_s or 0.0, wait_s)
        log.error("%s", message)

    def _ledger_error(self, report: PollReport, exc: LedgerError) -> None:
        """The queue's database failed: this pass stops, the next one tries again (nothing is lost:
        each queue change is one transaction)."""
        report.errors += 1
        if isinstance(exc, LedgerBusy):
            log.warning("%s: this pass stops here; the next poll retries", exc)
        else:
            log.error("%s", exc)

    def _persist(self, what: str, write: Callable[[], _T]) -> _T | None:
        """A queue write that must not be lost (an evaluation's outcome): retried while another
        writer holds the lock, until it lands; None when the watcher is stopped first (the row is
        then still ``running``, which the next start re-queues)."""
        delay = 1.0
        while True:
            try:
                return write()
            except LedgerBusy as exc:
                log.warning("%s: %s; retrying in %.0f s", what, exc, delay)
                if self.stop.wait(delay):
                    return None
                delay = min(2 * delay, 60.0)

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

    def _retry_failed(self, entry: Entry, report: PollReport) -> None:
        """A head that failed in an earlier process gets a fresh round of attempts (once per start)."""
        if entry.state != State.FAILED or self._retry_ids is None or entry.id not in self._retry_ids:
            return
        self._retry_ids.discard(entry.id)
        self.queue.retry(entry.id)
        report.queued += 1
        log.info("re-queued %s @ %s: its evaluation failed before this start (%s)", entry.target, entry.sha[:12],
                 entry.last_error or "unknown error")

    def _discover(self, report: PollReport) -> None:
        pulls = {p.number: p for p in self.client.open_pulls(self.s.base_branch)}
        current: dict[int, PullHead] = {}
        entries: dict[int, Entry] = {}
        for pull in pulls.values():
            if self._eligible(pull) is None:
                current[pull.number] = pull
                entry, created = self.queue.enqueue(
                    self.s.repo, f"pr/{pull.number}", pull.head_sha, self._job_fields(pull)
                )
                entries[pull.number] = entry
                if created:
                    report.queued += 1
                    log.info("queued PR #%d @ %s by %s", pull.number, pull.head_sha[:12], pull.author)
                else:
                    self._retry_failed(entry, report)
        try:
            live = self.recorder.frontier(self.s.repo, self.s.base_branch)
        except EvalbotError as exc:
            self._error(report, exc)
        else:
            self._requeue_stale(entries, live, report)
            self._write_merge_queue(entries, live, report)
        heads = {f"pr/{number}": pull.head_sha for number, pull in current.items()}
        for entry in self.queue.republish_stale(self.s.repo, heads):
            log.info("%s is back at %s: publishing its stored result again (not evaluating it again)",
                     entry.target.replace("pr/", "PR #"), entry.sha[:12])
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
        entry, created = self.queue.enqueue(self.s.repo, f"branch/{branch.name}", branch.sha, fields)
        if created:
            report.queued += 1
            log.info("queued %s @ %s by %s", branch.name, branch.sha[:12], branch.author)
        else:
            self._retry_failed(entry, report)

    def _requeue_stale(self, entries: dict[int, Entry], live: str | None, report: PollReport) -> None:
        """Open heads whose verdict was measured against an older frontier, or under another policy,
        are queued again: a label is paid against the live frontier, so two PRs that speed up the
        same kernel cannot both keep the win once one of them is merged. A REJECT stays: correctness
        does not depend on the frontier, and a faster frontier only widens a regression."""
        policy = getattr(getattr(self.evaluator, "policy", None), "sha256", None)
        for number, entry in entries.items():
            verdict = entry.verdict
            if entry.state != State.DONE or verdict is None or verdict.get("label") in (None, "REJECT"):
                continue
            measured = verdict.get("baseline_sha")
            if live is not None and measured != live and entry.sha != live:  # a head that is the frontier stays
                why = f"the frontier moved from {(measured or 'none')[:12]} to {live[:12]}"
            elif policy is not None and verdict.get("policy_hash") not in (None, policy):
                why = f"the policy changed to {policy[:12]}"
            else:
                continue
            requeued = self.queue.requeue_stale(entry.id, why)
            if requeued is None:
                continue
            report.queued += 1
            log.info("re-queued PR #%d @ %s: %s (its %s no longer holds)", number, entry.sha[:12], why,
                     verdict.get("label"))
            self._show_pending(number, requeued, why, report)

    def _write_merge_queue(self, entries: dict[int, Entry], live: str | None, report: PollReport) -> None:
        """The open PRs' wins ranked against the live frontier, for ``evalbot frontier queue``."""
        if self.s.data_dir is None or self.publisher is None:
            return
        self._write_ranked([ranking.candidate(n, e.sha, str(e.job.get("author", "")), e.verdict, live)
                            for n, e in entries.items() if e.state == State.DONE and e.verdict is not None],
                           live, report)

    def _write_ranked(self, found: list[ranking.Candidate | None], live: str | None, report: PollReport) -> None:
        assert self.s.data_dir is not None
        try:
            ranking.write(self.s.data_dir, live, ranking.rank(c for c in found if c is not None))
        except OSError as exc:
            self._error(report, f"writing the merge queue: {exc}")

    def _show_pending(self, number: int, entry: Entry, why: str, report: PollReport) -> None:
        """The PR says its verdict is being re-measured, and carries no label until it is."""
        if self.publisher is None:
            return
        lines = [f"re-evaluation queued: {why}; the last verdict no longer holds (it is listed below)"]
        earlier = _superseded(entry) + [_outcome(e) for e in self.queue.history(entry.repo, entry.target)
                                        if e.id != entry.id]
        try:
            self.publisher.sticky_comment(number, render_pending(entry.sha, lines, earlier))
            self.publisher.labels(number, None)
        except EvalbotError as exc:  # the verdict's own publish converges later
            self._error(report, f"showing the re-evaluation of PR #{number}: {exc}")

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

        adopted = self.queue.adopt(entry.id, failed_since=self._started)
        if adopted is not None:  # the same commit finished for another target meanwhile
            log.info("%s @ %s: taking over its %s for %s instead of evaluating it again", adopted.target,
                     adopted.sha[:12], "verdict" if adopted.state == State.DONE else "failure from this run",
                     "another PR or the base branch")
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
        claimed = self.queue.start(entry.id)
        if claimed is None:  # another process claimed it between the listing and now
            log.warning("%s @ %s is no longer queued (taken by another process): not evaluating it here",
                        entry.target, entry.sha[:12])
            return True
        entry = claimed
        self._not_before.pop(entry.sha, None)
        log.info("evaluating %s (attempt %d, baseline %s)", job.describe(), entry.attempts,
                 baseline[:12] if baseline else "none")
        try:
            verdict = self.evaluator.evaluate(job, self.cancel)
        except Cancelled:
            self._persist(f"abandoning {job.describe()}", lambda: self.queue.abandon(entry.id))
            log.warning("abandoned %s: shutting down; it will run again on the next start", job.describe())
            return False
        except Exception as exc:  # whatever the evaluator raised, the bot stays up
            return self._evaluation_failed(entry, job, exc, report)
        try:
            record = {**verdict_to_json(verdict), "baseline_sha": baseline}
            json.dumps(record)  # a verdict the queue cannot store is the evaluator's failure
        except (TypeError, ValueError, AttributeError) as exc:
            error = clean_error(f"unusable verdict: {_one_line(exc)}", self.s.secrets)
            return self._infrastructure_failure(entry, job, error, Fault.DETERMINISTIC, report)
        return self._finish(entry, job, verdict, record, report)

    def _finish(self, entry: Entry, job: Job, verdict: Verdict, record: dict[str, Any],
                report: PollReport) -> bool:
        stored = self._persist(f"storing the verdict on {job.describe()}", lambda: self.queue.finish(entry.id, record))
        if stored is None:
            return False
        report.evaluated += 1
        log.info("verdict %s for %s: %s", verdict.label, job.describe(), verdict.summary())
        return True

    def _evaluation_failed(self, entry: Entry, job: Job, exc: Exception, report: PollReport) -> bool:
        fault = classify(exc)
        if fault is Fault.CONTRIBUTOR:
            # The commit's own content: a verdict like a failed build, final whatever is retried.
            verdict = reject_for_input(job, clean_error(str(exc).strip() or _one_line(exc), self.s.secrets))
            return self._finish(entry, job, verdict, {**verdict_to_json(verdict), "baseline_sha": job.baseline_sha},
                                report)
        return self._infrastructure_failure(entry, job, clean_error(_one_line(exc), self.s.secrets), fault, report)

    def _infrastructure_failure(self, entry: Entry, job: Job, error: str, fault: Fault, report: PollReport) -> bool:
        """The validator's side failed: kept in the queue and the log only (nothing public)."""
        final = fault is Fault.DETERMINISTIC
        failed = self._persist(f"noting the failure of {job.describe()}",
                               lambda: self.queue.fail_attempt(entry.id, error, self.s.max_attempts, final=final))
        if failed is None:
            return False
        report.errors += 1
        if failed.state == State.FAILED:
            report.failed += 1
            why = ("not retried: the same error would come back" if final
                   else f"{failed.attempts} attempts failed")
            log.error("evaluation of %s failed (%s): %s; %s. Nothing is published; it runs again when "
                      "evalbot restarts (after the cause is fixed) or a new commit is pushed",
                      job.describe(), fault.value, error, why)
            return True
        delay = min(self.s.retry_backoff_s * 2 ** (failed.attempts - 1), _MAX_FAILURE_BACKOFF_S)
        self._not_before[entry.sha] = time.monotonic() + delay
        log.error("evaluation of %s failed (attempt %d of %d, %s): %s; retrying in %.3g s", job.describe(),
                  failed.attempts, self.s.max_attempts, fault.value, error, delay)
        return True

    # -- record and publish ------------------------------------------------------------------------

    def _record_pending(self, report: PollReport) -> None:
        for entry in self.queue.unrecorded():
            assert entry.finished_at is not None and entry.verdict is not None
            started = entry.started_at or entry.finished_at
            job = _job_from(entry, entry.verdict.get("baseline_sha"))
            try:
                self.recorder.record(job, verdict_from_json(entry.verdict), started, entry.finished_at)
            except EvalbotError as exc:
                self._error(report, exc)
                continue
            self.queue.mark_recorded(entry.id)

    def _publish_pending(self, report: PollReport) -> None:
        for entry in self.queue.unpublished():
            if self.stop.is_set():
                return
            try:
                shown = self._publish(entry)
            except EvalbotError as exc:
                entry = self.queue.publish_failed(entry.id, str(exc))
                wait = exc.wait_s if isinstance(exc, GithubUnavailable) else None
                self._error(report, f"publishing {entry.target} {entry.sha[:12]} failed "
                            f"(attempt {entry.publish_attempts}; will retry): {exc}", wait)
                if isinstance(exc, GithubUnavailable):
                    return  # GitHub is unwell: the rest waits for the next pass
                continue
            self.queue.mark_published(entry.id, shown=shown)
            report.published += 1

    def _with_checkpoint(self, outcome: Outcome, recorder: object | None = None) -> Outcome:
        """``outcome`` with the transparency log's note: the signed checkpoint that includes its ledger
        entry and the command that verifies the inclusion proof (docs/ledger.md). A ledger that cannot
        give one leaves the verdict published without it, never unpublished."""
        note = getattr(recorder if recorder is not None else self.recorder, "transparency_note", None)
        if note is None or outcome.label is None:
            return outcome
        try:
            text = note(outcome.sha)
        except EvalbotError as exc:
            log.warning("no checkpoint for %s in its comment: %s", outcome.sha[:12], exc)
            return outcome
        if not text:
            return outcome
        return dataclasses.replace(outcome, markdown=outcome.markdown.rstrip() + "\n\n" + text)

    def _publish(self, entry: Entry) -> bool:
        """Publish one result; True when the PR's comment and label now show it (not just a status)."""
        outcome = self._with_checkpoint(_outcome(entry))
        if self.publisher is None:
            log.info("dry run: would publish %s on %s @ %s", outcome.label or "error", entry.target,
                     entry.sha[:12])
            return entry.target.startswith("pr/")  # as if shown: not offered for a republish again
        if not entry.target.startswith("pr/"):
            self.publisher.status(outcome)
            return False
        number = int(entry.target.removeprefix("pr/"))
        pull = self.client.pull(number)
        if pull.state != "open" or pull.head_sha != entry.sha:
            # The PR moved on: the commit gets its status; the comment and label belong to the new
            # head, whose publish lists this result in the history.
            self.publisher.status(outcome)
            log.info("published status %s @ %s (PR #%d has moved on)", outcome.label or "error",
                     entry.sha[:12], number)
            return False
        earlier = _superseded(entry) + [_outcome(e) for e in self.queue.history(entry.repo, entry.target)
                                        if e.id != entry.id]
        self.publisher.publish_pull(number, outcome, earlier, set_label=True)
        log.info("published %s on PR #%d @ %s", outcome.label or "error", number, entry.sha[:12])
        return True
