"""The poller's :class:`~evalbot.recorder.Recorder` on the public ledger.

A commit has one evaluation row, whichever targets (PRs, the base branch) it was queued for; a
verified base-branch commit additionally gets a frontier advance that points at that row. An
evaluation that could not be completed (the evaluator raised ``max_attempts`` times) is a row with
status ``error``, no label and the sanitized last error as its reason; it never advances the frontier.

The ledger's own errors (:class:`ledger.LedgerError`) cross into evalbot here, as
:class:`~evalbot.errors.EvalbotError`: the poller reports those as one line and carries on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from evalbot import __version__
from evalbot.config import Config
from evalbot.errors import EvalbotError
from evalbot.pipeline import Job, Verdict
from evalbot.recorder import Recorder
from ledger import AdvanceIn, EvaluationIn, FrontierConflictError, Ledger, LedgerError, MeasurementIn, Signer
from ledger.records import STATUS_COMPLETE, STATUS_ERROR

log = logging.getLogger("evalbot.watch")
_BASKET_MAX = 100
# A failed evaluation has no GPU report and applied no policy; the ledger's columns are not optional.
FAILED_GPU = "unknown"
FAILED_POLICY = "n/a"


@contextmanager
def ledger_errors() -> Iterator[None]:
    """Re-raise a ledger problem as an :class:`EvalbotError` with the same message."""
    try:
        yield
    except LedgerError as exc:
        raise EvalbotError(str(exc)) from exc


def basket_id(cfg: Config) -> str:
    """The basket's name in the ledger: its model names, or their hash when that would be too long."""
    names = "+".join(Path(m).stem for m in cfg.basket.models)
    if len(names) <= _BASKET_MAX:
        return names
    return "basket-" + hashlib.sha256(names.encode()).hexdigest()[:16]


def _evaluation(job: Job, verdict: Verdict, basket: str, gpu_class: str, started_at: datetime,
                finished_at: datetime) -> EvaluationIn:
    return EvaluationIn(
        repo=job.repo,
        commit_sha=job.sha,
        author=job.author,
        gpu=verdict.gpu,
        gpu_class=gpu_class,
        basket=basket,
        evalbot_version=__version__,
        policy_hash=verdict.policy_hash,
        started_at=started_at,
        finished_at=finished_at,
        status=STATUS_COMPLETE,
        label=verdict.label,
        verdict=dict(verdict.document),
        pr=job.pr_number,
        base_commit=job.base_sha,
        frontier_commit=job.baseline_sha,
        reasons=verdict.reasons,
        measurements=tuple(
            MeasurementIn(
                model=m.model,
                gates_passed=m.gates_passed,
                tokens_per_s=m.tokens_per_s,
                frontier_tokens_per_s=m.baseline_tokens_per_s,
                speedup=m.speedup,
                speedup_ci_low=m.speedup_ci[0] if m.speedup_ci else None,
                speedup_ci_high=m.speedup_ci[1] if m.speedup_ci else None,
            )
            for m in verdict.models
        ),
    )


def _failure(job: Job, error: str, attempts: int, basket: str, gpu_class: str, started_at: datetime,
             finished_at: datetime) -> EvaluationIn:
    return EvaluationIn(
        repo=job.repo,
        commit_sha=job.sha,
        author=job.author,
        gpu=FAILED_GPU,
        gpu_class=gpu_class,
        basket=basket,
        evalbot_version=__version__,
        policy_hash=FAILED_POLICY,
        started_at=min(started_at, finished_at),
        finished_at=finished_at,
        status=STATUS_ERROR,
        label=None,
        verdict={"outcome": "failed", "attempts": attempts, "error": error},
        pr=job.pr_number,
        base_commit=job.base_sha,
        frontier_commit=job.baseline_sha,
        reasons=(f"evaluation could not be completed ({attempts} attempts): {error}",),
    )


class LedgerRecorder:
    def __init__(self, ledger: Ledger, basket: str, gpu_class: str) -> None:
        self.ledger = ledger
        self.basket = basket
        self.gpu_class = gpu_class

    def frontier(self, repo: str, base_ref: str) -> str | None:
        with ledger_errors():
            advance = self.ledger.frontier(self.basket, self.gpu_class)
        return advance.commit_sha if advance else None

    def record(self, job: Job, verdict: Verdict, started_at: datetime, finished_at: datetime) -> None:
        with ledger_errors():
            self._record(job, verdict, started_at, finished_at)

    def _record(self, job: Job, verdict: Verdict, started_at: datetime, finished_at: datetime) -> None:
        # Idempotent: a row for this commit against this frontier, under this policy and GPU class,
        # means a previous call (or another target of the same commit) already appended it. A
        # re-evaluation against a newer frontier is a row of its own: the ledger keeps every verdict.
        existing = [
            e for e in self.ledger.find(job.sha)
            if e.commit_sha == job.sha and e.repo == job.repo and e.gpu_class == self.gpu_class
            and e.policy_hash == verdict.policy_hash and e.status == STATUS_COMPLETE
            and e.frontier_commit == job.baseline_sha
        ]
        if existing:
            seq = existing[0].seq
        else:
            seq = self.ledger.record_evaluation(
                _evaluation(job, verdict, self.basket, self.gpu_class, started_at, finished_at), once=True
            ).seq
        if job.kind == "base" and verdict.verified:
            self._advance(job, verdict, seq, finished_at)

    def record_failure(self, job: Job, error: str, attempts: int, started_at: datetime,
                       finished_at: datetime) -> None:
        # ``once``: the same failure (same times, same error) recorded again after a crash is found
        # by its content hash; a later failed round of the same commit is a row of its own.
        with ledger_errors():
            self.ledger.record_evaluation(
                _failure(job, error, attempts, self.basket, self.gpu_class, started_at, finished_at), once=True
            )

    def _advance(self, job: Job, verdict: Verdict, seq: int, when: datetime) -> None:
        if self.frontier(job.repo, job.base_ref) == job.sha:
            return  # recorded by an earlier call (or the commit was the frontier already)
        deltas = {m.model: m.speedup - 1.0 for m in verdict.models if m.speedup is not None}
        try:
            self.ledger.record_frontier_advance(
                AdvanceIn(
                    basket=self.basket,
                    gpu_class=self.gpu_class,
                    commit_sha=job.sha,
                    author=job.author,
                    previous_commit=job.baseline_sha,
                    # A win must hold on every basket model: the advance is the smallest one.
                    delta=min(deltas.values(), default=0.0),
                    advanced_at=when,
                    model_deltas=deltas,
                    evaluation_seq=seq,
                ),
                once=True,
            )
        except FrontierConflictError as exc:
            # Measured against a frontier that moved meanwhile: the Δ would be wrong, so no advance.
            log.warning("no frontier advance for %s: %s", job.sha[:12], exc)
            return
        log.info("frontier advanced to %s by %s (Δ %+.2f%%)", job.sha[:12], job.author,
                 100 * min(deltas.values(), default=0.0))


    def transparency_note(self, sha: str, site_url: str | None = None) -> str | None:
        """Markdown for the PR comment of ``sha``'s newest verdict: the signed checkpoint that includes
        its entry and the command that verifies it (None when the commit has no entry or no key is loaded)."""
        from evalbot.verdict import transparency_markdown
        from ledger.proofs import default_origin

        signer = self.ledger.signer
        with ledger_errors():
            found = self.ledger.find(sha)
            if not found or signer is None:
                return None
            signed = self.ledger.checkpoint(signer, default_origin(signer.key_id))
        return transparency_markdown(signed.text(), found[-1].seq, signer.key_id, site_url)


class DryRunRecorder:
    """Reads the frontier from the ledger when there is one; records nothing."""

    def __init__(self, ledger: Ledger | None, basket: str, gpu_class: str) -> None:
        self.ledger = ledger
        self.basket = basket
        self.gpu_class = gpu_class

    def frontier(self, repo: str, base_ref: str) -> str | None:
        if self.ledger is None:
            return None
        with ledger_errors():
            advance = self.ledger.frontier(self.basket, self.gpu_class)
        return advance.commit_sha if advance else None

    def record(self, job: Job, verdict: Verdict, started_at: datetime, finished_at: datetime) -> None:
        log.info("dry run: would record %s for %s", verdict.label, job.describe())

    def record_failure(self, job: Job, error: str, attempts: int, started_at: datetime,
                       finished_at: datetime) -> None:
        log.info("dry run: would record the failed evaluation of %s", job.describe())


def open_recorder(cfg: Config, read_only: bool) -> tuple[Recorder, Engine | None]:
    """The recorder, and the ledger's engine for the queue (None in a dry run: nothing is written)."""
    gpu_class = cfg.ledger.gpu_class or "unspecified"
    if read_only:
        try:
            with ledger_errors():
                ledger: Ledger | None = Ledger.open(cfg.ledger_url)
        except EvalbotError as exc:
            log.warning("dry run without a ledger (%s): PRs are compared with their base commit", exc)
            ledger = None
        return DryRunRecorder(ledger, basket_id(cfg), gpu_class), None
    if not cfg.ledger.signing_key:
        raise EvalbotError(
            f"{cfg.source}: [ledger] signing_key is not set (create a key with `evalbot ledger keygen`)"
        )
    if not cfg.ledger.gpu_class:
        raise EvalbotError(f"{cfg.source}: [ledger] gpu_class is not set (e.g. \"H100-SXM\")")
    with ledger_errors():
        signer = Signer.load(Path(cfg.ledger.signing_key).expanduser())
        ledger = Ledger.open(cfg.ledger_url, signer=signer, create=True)
    return LedgerRecorder(ledger, basket_id(cfg), cfg.ledger.gpu_class), ledger.engine
